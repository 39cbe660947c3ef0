#!/usr/bin/env bash
# Side-by-side CPU speed: iwtvae vs the PyTorch reference, same machine, same run.
#   benches/compare.sh                 # needs python3 with torch, numpy, safetensors
#   PYTHON=/path/to/venv/bin/python benches/compare.sh
# Env: IWTVAE_BENCH_TRAIN (images in the timed epoch, default 60000),
#      IWTVAE_BENCH_NLL (test images for NLL k=5000, default 200),
#      TORCH_TRAIN_STEPS (default 200), TORCH_NLL_IMAGES (default 20), THREADS (default 2),
#      TORCH_COMPILE (default 1: PyTorch is timed eager and through torch.compile,
#      and the faster is the baseline; 0: eager only).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-2}
echo "machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores, threads=$THREADS" >&2
ours=$(RAYON_NUM_THREADS=$THREADS cargo bench -q --bench speed 2>/dev/null | tail -1)
theirs=$($PYTHON benches/pytorch/iwtvae_torch.py bench --threads "$THREADS" \
  --train-steps "${TORCH_TRAIN_STEPS:-200}" --nll-images "${TORCH_NLL_IMAGES:-20}" \
  $([ "${TORCH_COMPILE:-1}" = 1 ] && echo --compile) | tail -1)
echo "$ours"
echo "$theirs"
$PYTHON benches/pytorch/ratios.py "$ours" "$theirs"
