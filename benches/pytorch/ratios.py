"""Print iwtvae vs PyTorch speed ratios from the benches' JSON lines.
Usage: python ratios.py '<iwtvae json>' '<pytorch json>' ['<pytorch json>' ...]
Several PyTorch runs (eager, compiled) give PyTorch's best of them for each
figure; a run that printed no JSON (a failed or timed-out compilation) is
reported and left out, so the others' figures still stand."""
import json
import sys

if len(sys.argv) < 3:
    sys.exit(__doc__)
ours = json.loads(sys.argv[1])
runs = []
for text in sys.argv[2:]:
    try:
        runs.append(json.loads(text))
    except ValueError:
        print(f"a PyTorch run printed no result, left out: {text[:200]!r}")
if not runs:
    sys.exit("no PyTorch result to compare with")
train = f"training epoch (TPS, k=5, batch 100, {ours.get('train_precision', 'fp32')})"
for key, name in [("train_images_per_sec", train),
                  ("nll_k5000_images_per_sec", f"NLL k=5000 ({ours.get('precision', 'fp32')})")]:
    best = max(runs, key=lambda r: r[key])
    a, b = ours[key], best[key]
    others = ", ".join(f"{r.get('mode', 'eager')} {r[key]:.1f}" for r in runs if r is not best)
    print(f"{name:44s} iwtvae {a:10.1f} img/s   pytorch ({best.get('mode', 'eager')}) {b:10.1f} img/s   "
          f"ratio {a / b:6.2f}x" + (f"   (pytorch {others})" if others else ""))
if "nll_seconds" in ours:
    print(f"iwtvae NLL k=5000 over {ours['nll_images']} test images: {ours['nll_seconds']:.3f} s on {ours.get('device')}")
