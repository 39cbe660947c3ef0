#!/usr/bin/env bash
# `iwtvae probe` on every trained run under results/runs/ (checkpoints are
# git-ignored: run `iwtvae reproduce` first), one JSON per run under
# results/probe/, and the summary table results/probe.md.
#   scripts/probe-all.sh [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
mkdir -p results/probe
machine="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores"
for ck in results/runs/*/checkpoint.safetensors; do
  run=$(basename "$(dirname "$ck")")
  case "$run" in fashion-*) data=/usr/share/datasets/fashion-mnist ;; *) data=data/mnist ;; esac
  [ -d "$data" ] || { echo "skipping $run: no $data" >&2; continue; }
  ./target/release/iwtvae probe --checkpoint "$ck" --data "$data" --json "$@" > "results/probe/$run.json.tmp"
  mv "results/probe/$run.json.tmp" "results/probe/$run.json"
  echo "probed $run" >&2
done
python3 - "$machine" "$(git rev-parse --short HEAD)" <<'PY' > results/probe.md.tmp
import json, glob, os, sys
machine, commit = sys.argv[1], sys.argv[2]
def pct(v): return "—" if v is None else f"{100*v:.1f}"
def num(v, f="{:.2f}"): return "—" if v is None else f.format(v)
print("# Disentanglement, measured (`iwtvae probe`)\n")
print(f"`scripts/probe-all.sh` at commit {commit} on {machine}: `iwtvae probe --checkpoint results/runs/<run>/checkpoint.safetensors --json`")
print("(defaults: read-outs fit on all 60,000 training digits, tested on the 10,000 test digits, rotations ±15/30/45°, the run's")
print("binarization, seed 1). Label: test accuracy (%) of a linear discriminant reading the digit from the posterior mean.")
print("Moved: mean ‖Δμ‖² over 2× the block's spread (1 = as far as another digit's code). Warp turn: mean rotation of the warp")
print("set by μu when the digit turns (the applied angle if u took the whole rotation). Angle R²: the applied angle read by")
print("least squares from the code. ± columns average the +α and −α rows.\n")
print("| run | label z 0° | label u 0° | label z ±15° | label z ±45° | z moved ±15° | u moved ±15° | warp turn ±15° | warp turn ±45° | angle R² z | angle R² u | seconds |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob("results/probe/*.json")):
    r = json.load(open(path)); rows = {row["angle_deg"]: row for row in r["rows"]}
    def avg(key, a, sym=False):
        vals = [rows[x][key] for x in (a, -a) if x in rows]
        if any(v is None for v in vals) or not vals: return None
        if sym: vals = [vals[0], -vals[1]] if len(vals) == 2 else vals
        return sum(vals) / len(vals)
    ar = r.get("angle_readout") or {}
    name = os.path.basename(path)[:-5]
    print(f"| {name} | {pct(rows[0.0]['accuracy_z'])} | {pct(rows[0.0]['accuracy_u'])} | {pct(avg('accuracy_z',15))} | {pct(avg('accuracy_z',45))} | "
          f"{num(avg('moved_z',15))} | {num(avg('moved_u',15))} | {num(avg('warp_turn_deg',15,True),'{:.1f}°')} | {num(avg('warp_turn_deg',45,True),'{:.1f}°')} | "
          f"{num(ar.get('r2_z'))} | {num(ar.get('r2_u'))} | {r['seconds']:.1f} |")
print("\nWarp turn (degrees) per class of the label when the test digits are turned by 30° (the warp would turn by 30° if u took the whole turn):\n")
print("| run | " + " | ".join(str(c) for c in range(10)) + " |")
print("|---|" + "---|" * 10)
for path in sorted(glob.glob("results/probe/*.json")):
    r = json.load(open(path)); rows = {row["angle_deg"]: row for row in r["rows"]}
    by = rows.get(30.0, {}).get("warp_turn_by_class_deg")
    if by: print(f"| {os.path.basename(path)[:-5]} | " + " | ".join(num(v, '{:.1f}') for v in by) + " |")
PY
mv results/probe.md.tmp results/probe.md
echo "wrote results/probe.md" >&2
