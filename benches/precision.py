"""Compare per-image NLL estimates (CSV from `iwtvae eval --per-image`) of
GPU precisions against the CPU's fp32 on the same noise.
Usage: python precision.py cpu.csv gpu-fp32.csv gpu-tf32.csv gpu-bf16.csv"""
import csv
import sys


def nll(path):
    with open(path) as f:
        return {int(r["index"]): float(r["nll"]) for r in csv.DictReader(f)}


ref = nll(sys.argv[1])
print(f"reference {sys.argv[1]}: {len(ref)} images, mean NLL {sum(ref.values()) / len(ref):.4f}")
for path in sys.argv[2:]:
    got = nll(path)
    d = [got[i] - ref[i] for i in ref]
    mean_abs = sum(abs(v) for v in d) / len(d)
    print(f"{path:40s} mean NLL diff {sum(d) / len(d):+.5f}  mean |diff| {mean_abs:.5f}  max |diff| {max(map(abs, d)):.5f} nats"
          f"  -> {'within' if abs(sum(d) / len(d)) <= 0.01 else 'OUTSIDE'} 0.01 nats")
