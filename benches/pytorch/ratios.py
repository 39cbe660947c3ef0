"""Print iwtvae vs PyTorch speed ratios from the two benches' JSON lines.
Usage: python ratios.py '<iwtvae json>' '<pytorch json>'"""
import json
import sys

ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for key, mode, name in [("train_images_per_sec", "train_mode", "training epoch (TPS, k=5, batch 100)"),
                        ("nll_k5000_images_per_sec", "nll_mode", "NLL k=5000")]:
    a, b = ours[key], theirs[key]
    how = theirs.get(mode, "eager")
    print(f"{name:40s} iwtvae {a:10.1f} img/s   pytorch ({how}) {b:10.1f} img/s   ratio {a / b:6.2f}x")
if theirs.get("compile_error"):
    print(f"torch.compile failed, so PyTorch is eager only: {theirs['compile_error']}")
if "nll_seconds" in ours:
    print(f"iwtvae NLL k=5000 over {ours['nll_images']} test images: {ours['nll_seconds']:.3f} s on {ours.get('device')}")
