"""Compare per-image NLL estimates (CSV from `iwtvae eval --per-image`) of
GPU precisions against the CPU's fp32 on the same noise, and name the
precision that `--precision auto` should pick on a GPU: the fastest whose NLL
(the mean over the images) is within 0.01 nats of the CPU's.

Usage: python precision.py cpu.csv gpu-fp32.csv gpu-tf32.csv gpu-bf16.csv \
           [--timing full-fp32.json full-tf32.json full-bf16.json]
Each GPU file's precision is read from its name (fp32, tf32 or bf16); the
timings are `iwtvae eval --json` reports (their "precision" and "seconds")."""
import csv
import json
import re
import sys

TOLERANCE = 0.01
skipped = []


def nll(path):
    """The per-image NLL in `path`, or None (said why) when it cannot be read:
    one precision's failed run should not hide the others' figures."""
    try:
        with open(path) as f:
            return {int(r["index"]): float(r["nll"]) for r in csv.DictReader(f)}
    except (OSError, KeyError, ValueError) as e:
        print(f"{path}: skipped, cannot read it ({e})")
        skipped.append(path)
        return None


def report_of(path):
    try:
        with open(path) as f:
            report = json.load(f)
        missing = [key for key in ("precision", "seconds", "images", "k", "nll") if key not in report]
        if missing:
            raise KeyError(", ".join(missing))
        return report
    except (OSError, KeyError, ValueError) as e:
        print(f"{path}: skipped, not an `iwtvae eval --json` report ({e})")
        skipped.append(path)
        return None


def precision_of(path):
    m = re.search(r"(fp32|tf32|bf16)", path.rsplit("/", 1)[-1])
    if not m:
        sys.exit(f"{path}: no precision (fp32, tf32 or bf16) in the file name")
    return m.group(1)


args = sys.argv[1:]
timing_files = []
if "--timing" in args:
    i = args.index("--timing")
    args, timing_files = args[:i], args[i + 1:]
if len(args) < 2:
    sys.exit(__doc__)

ref = nll(args[0])
if not ref:
    sys.exit(f"{args[0]}: the CPU reference is needed")
print(f"reference {args[0]}: {len(ref)} images, mean NLL {sum(ref.values()) / len(ref):.4f}")
within = {}
for path in args[1:]:
    got = nll(path)
    if got is None:
        continue
    missing = set(ref) - set(got)
    if missing:
        sys.exit(f"{path}: {len(missing)} of the reference's images are missing")
    d = [got[i] - ref[i] for i in ref]
    mean = sum(d) / len(d)
    mean_abs = sum(abs(v) for v in d) / len(d)
    ok = abs(mean) <= TOLERANCE
    within[precision_of(path)] = ok
    print(f"{path:40s} mean NLL diff {mean:+.5f}  mean |diff| {mean_abs:.5f}  max |diff| {max(map(abs, d)):.5f} nats"
          f"  -> {'within' if ok else 'OUTSIDE'} {TOLERANCE} nats")

if timing_files:
    seconds = {}
    for path in timing_files:
        report = report_of(path)
        if report is None:
            continue
        seconds[report["precision"]] = report["seconds"]
        print(f"{report['precision']}: {report['images']} images, k = {report['k']}: {report['seconds']:.3f} s, "
              f"NLL {report['nll']:.4f}")
    fit = [p for p in seconds if within.get(p)]
    if fit:
        best = min(fit, key=lambda p: seconds[p])
        among = f" of those measured ({', '.join(sorted(fit))})" if skipped else ""
        print(f"--precision auto on this GPU should be {best}: the fastest within {TOLERANCE} nats{among} "
              f"(src/eval.rs GPU_DEFAULT_PRECISION)")
    else:
        print(f"no timed precision is within {TOLERANCE} nats: --precision auto should be fp32")
if skipped:
    sys.exit(f"incomplete: {len(skipped)} file(s) skipped")
