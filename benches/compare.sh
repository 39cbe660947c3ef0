#!/usr/bin/env bash
# Side-by-side CPU speed: iwtvae vs the PyTorch reference, same machine, same run.
#   benches/compare.sh                 # needs python3 with torch, numpy, safetensors
#   PYTHON=/path/to/venv/bin/python benches/compare.sh
# Env: IWTVAE_BENCH_TRAIN (images in the timed epoch, default 60000),
#      IWTVAE_BENCH_NLL (test images for NLL k=5000, default 200),
#      TORCH_TRAIN_STEPS (default 200), TORCH_NLL_IMAGES (default 20), THREADS (default 2),
#      TORCH_COMPILE (default 1: PyTorch is timed eager and, in a second run,
#      through torch.compile; the faster is the baseline; 0: eager only).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-2}
echo "machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores, threads=$THREADS" >&2
ours=$(RAYON_NUM_THREADS=$THREADS cargo bench -q --bench speed 2>/dev/null | tail -1)
torch_bench() {
  $PYTHON benches/pytorch/iwtvae_torch.py bench --threads "$THREADS" \
    --train-steps "${TORCH_TRAIN_STEPS:-200}" --nll-images "${TORCH_NLL_IMAGES:-20}" "$@" | tail -1
}
theirs=$(torch_bench --mode eager)
# torch.compile in a run of its own: a failed compilation loses only its figures.
compiled=$([ "${TORCH_COMPILE:-1}" = 1 ] && torch_bench --mode compiled || true)
echo "$ours"
echo "$theirs"
[ -n "$compiled" ] && echo "$compiled"
$PYTHON benches/pytorch/ratios.py "$ours" "$theirs" ${compiled:+"$compiled"}
