"""Print iwtvae vs PyTorch speed ratios from the benches' JSON lines.
Usage: python ratios.py [--nll-only] '<iwtvae json>' '<pytorch json>' ['<pytorch json>' ...]
Several PyTorch runs (eager, compiled) give PyTorch's best of them for each
figure; a run that printed no JSON (a failed or timed-out compilation) is
reported and left out, so the others' figures still stand. --nll-only
prints the NLL line alone (runs that trained only to have a model)."""
import json
import sys

args = sys.argv[1:]
nll_only = bool(args) and args[0] == "--nll-only"
args = args[1:] if nll_only else args
if len(args) < 2:
    sys.exit(__doc__)
ours = json.loads(args[0])
runs = []
for text in args[1:]:
    try:
        runs.append(json.loads(text))
    except ValueError:
        print(f"a PyTorch run printed no result, left out: {text[:200]!r}")
if not runs:
    sys.exit("no PyTorch result to compare with")
train = f"training epoch (TPS, k=5, batch 100, {ours.get('train_precision', 'fp32')})"
theirs_nll = runs[0].get("nll_precision", "fp32")
lines = [("train_images_per_sec", train),
         ("nll_k5000_images_per_sec", f"NLL k=5000 ({ours.get('precision', 'fp32')} vs {theirs_nll})")]
for key, name in lines[1:] if nll_only else lines:
    best = max(runs, key=lambda r: r[key])
    a, b = ours[key], best[key]
    others = ", ".join(f"{r.get('mode', 'eager')} {r[key]:.1f}" for r in runs if r is not best)
    print(f"{name:44s} iwtvae {a:10.1f} img/s   pytorch ({best.get('mode', 'eager')}) {b:10.1f} img/s   "
          f"ratio {a / b:6.2f}x" + (f"   (pytorch {others})" if others else ""))
if "nll_seconds" in ours:
    print(f"iwtvae NLL k=5000 over {ours['nll_images']} test images: {ours['nll_seconds']:.3f} s on {ours.get('device')}")
