#!/usr/bin/env bash
# The README's DReG study in one command: for each model and training seed,
# table 3's IWAE run (retrained, to get its per-image estimates) and the same
# run with --objective iwae-dreg, both evaluated with k = 5000 on the same
# noise (eval seed 1), then every pair compared image by image, and the
# tables the README shows printed at the end.
#   scripts/estimator-study.sh [--models vae,affine,tps] [--seeds 1,2,3] [--work DIR]
# Writes results/dreg/<model>-iwaedreg5-seed<S>/ (config, log, eval; the
# checkpoints are git-ignored) and results/compare/*.json; the IWAE runs and
# the per-image CSVs go to the work folder (default target/estimator-study).
# A run whose eval.json exists is not redone, so an interrupted study
# resumes. About 9 minutes per (model, seed) on 2 cores. DRY_RUN=1 prints
# the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
models=vae,affine,tps seeds=1,2,3 work=target/estimator-study
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) echo "estimator-study.sh: unknown argument '$1' (--models, --seeds, --work)" >&2; exit 2 ;;
  esac
done
bin=./target/release/iwtvae
run() {
  if [ -n "${DRY_RUN:-}" ]; then echo "$*"; else "$@"; fi
}
# run_to FILE CMD...: CMD's stdout into FILE, atomically.
run_to() {
  local file=$1; shift
  if [ -n "${DRY_RUN:-}" ]; then echo "$* > $file"; return; fi
  "$@" > "$file.tmp" && mv "$file.tmp" "$file"
}
model_flags() {
  case "$1" in
    vae) echo "--transform none --u-dim 0 --z-dim 60" ;;
    affine) echo "--transform affine --z-dim 54 --u-dim 6" ;;
    tps) echo "--transform tps --z-dim 42 --u-dim 18" ;;
    *) echo "estimator-study.sh: --models: unknown model '$1' (vae, affine, tps)" >&2; exit 2 ;;
  esac
}
# train_and_eval OBJECTIVE FLAGS SEED RUN_DIR CSV: table 3's protocol with
# OBJECTIVE, then the k = 5000 evaluation with per-image estimates.
train_and_eval() {
  local objective=$1 flags=$2 seed=$3 dir=$4 csv=$5
  if [ -f "$dir/eval.json" ] && [ -f "$csv" ]; then return; fi
  run rm -rf "$dir"
  # shellcheck disable=SC2086 # flags is a list of words
  run "$bin" train --objective "$objective" $flags --seed "$seed" --eval-k 0 --out "$dir"
  run_to "$dir/eval.json" "$bin" eval --checkpoint "$dir" --bounds 1,5,50,500 --per-image "$csv" --json
}
[ -n "${DRY_RUN:-}" ] || cargo build --release -q
mkdir -p "$work" results/dreg results/compare
IFS=, read -r -a model_list <<< "$models"
IFS=, read -r -a seed_list <<< "$seeds"
for model in "${model_list[@]}"; do model_flags "$model" > /dev/null; done
for seed in "${seed_list[@]}"; do
  for model in "${model_list[@]}"; do
    flags=$(model_flags "$model")
    train_and_eval iwae "$flags" "$seed" "$work/$model-iwae5-seed$seed" "$work/$model-iwae-$seed.csv"
    train_and_eval iwae-dreg "$flags" "$seed" "results/dreg/$model-iwaedreg5-seed$seed" "$work/$model-dreg-$seed.csv"
    run_to "results/compare/$model-iwae5-vs-iwaedreg5-seed$seed.json" \
      "$bin" compare "$work/$model-iwae-$seed.csv" "$work/$model-dreg-$seed.csv" --json
  done
  for pair in vae:affine vae:tps affine:tps; do
    a=${pair%:*} b=${pair#*:}
    [[ ",$models," == *",$a,"* && ",$models," == *",$b,"* ]] || continue
    for est in iwae dreg; do
      suffix=$([ $est = iwae ] && echo iwae5 || echo iwaedreg5)
      run_to "results/compare/$a-vs-$b-$suffix-seed$seed.json" \
        "$bin" compare "$work/$a-$est-$seed.csv" "$work/$b-$est-$seed.csv" --json
    done
  done
done
[ -n "${DRY_RUN:-}" ] && exit 0
python3 - "$models" "$seeds" <<'PY'
import json, statistics as st, sys
models, seeds = sys.argv[1].split(","), [int(s) for s in sys.argv[2].split(",")]
def load(name): return json.load(open(f"results/compare/{name}.json"))
def mean_sd(v): return f"{st.mean(v):.2f}" + (f" ± {st.stdev(v):.2f}" if len(v) > 1 else "")
print("| model, seed | NLL k = 5000, IWAE | IWAE-DReG | paired Δ (DReG − IWAE) | DReG lower on |")
print("|---|---|---|---|---|")
for m in models:
    rows = [load(f"{m}-iwae5-vs-iwaedreg5-seed{s}") for s in seeds]
    for s, d in zip(seeds, rows):
        print(f"| {m}, {s} | {d['a']['mean']:.2f} | {d['b']['mean']:.2f} | {d['diff']['mean']:+.3f} ± {d['diff']['se']:.3f} | {100 * d['b_lower']:.1f}% |")
    print(f"| {m}, mean ± sd | {mean_sd([d['a']['mean'] for d in rows])} | {mean_sd([d['b']['mean'] for d in rows])} | "
          f"{mean_sd([d['diff']['mean'] for d in rows])} | |")
print()
print("| against the VAE (mean over seeds) | " + " | ".join(str(c) for c in range(10)) + " | all |")
print("|---" * 12 + "|")
for b in [m for m in ("tps", "affine") if m in models and "vae" in models]:
    for est, suffix in (("IWAE", "iwae5"), ("DReG", "iwaedreg5")):
        rows = [load(f"vae-vs-{b}-{suffix}-seed{s}") for s in seeds]
        per = [st.mean(d["per_label"][c]["mean"] for d in rows) for c in range(10)]
        print(f"| {b}, {est} | " + " | ".join(f"{v:+.2f}" for v in per) + f" | {st.mean(d['diff']['mean'] for d in rows):+.2f} |")
PY
