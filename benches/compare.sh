#!/usr/bin/env bash
# Side-by-side CPU speed: iwtvae vs the PyTorch reference, same machine, same run.
#   benches/compare.sh                 # needs python3 with torch, numpy, safetensors
#   PYTHON=/path/to/venv/bin/python benches/compare.sh
# Env: IWTVAE_BENCH_TRAIN (images in the timed epoch, default 60000),
#      IWTVAE_BENCH_NLL (test images for NLL k=5000, default 200),
#      TORCH_TRAIN_STEPS (default 200), TORCH_NLL_IMAGES (default 20), THREADS (default 2),
#      TORCH_COMPILE (default 1: PyTorch is timed eager and, in a second run,
#      through torch.compile; the faster is the baseline; 0: eager only),
#      NLL_BF16 (default 1: the NLL again with the decoder's layers in bf16,
#      ours `eval --precision bf16` beside PyTorch's under
#      torch.autocast(bfloat16); 0 leaves it out),
#      REPEAT (default 1: the fp32 comparison N times, ours first in odd
#      rounds and last in even ones, so that a drift of this shared machine's
#      speed does not favour one side; then each ratio's min, median and max).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-2}
echo "machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores, threads=$THREADS" >&2
torch_bench() {
  $PYTHON benches/pytorch/iwtvae_torch.py bench --threads "$THREADS" \
    --train-steps "${TORCH_TRAIN_STEPS:-200}" --nll-images "${TORCH_NLL_IMAGES:-20}" "$@" | tail -1
}
our_bench() { RAYON_NUM_THREADS=$THREADS cargo bench -q --bench speed 2>/dev/null | tail -1; }
REPEAT=${REPEAT:-1}
rounds=$(mktemp)
trap 'rm -f "$rounds"' EXIT
for round in $(seq 1 "$REPEAT"); do
  [ "$REPEAT" = 1 ] || echo "round $round of $REPEAT" >&2
  [ $((round % 2)) = 1 ] && ours=$(our_bench)
  theirs=$(torch_bench --mode eager)
  # torch.compile in a run of its own: a failed compilation loses only its figures.
  compiled=$([ "${TORCH_COMPILE:-1}" = 1 ] && torch_bench --mode compiled || true)
  [ $((round % 2)) = 0 ] && ours=$(our_bench)
  echo "$ours"
  echo "$theirs"
  [ -n "$compiled" ] && echo "$compiled"
  $PYTHON benches/pytorch/ratios.py "$ours" "$theirs" ${compiled:+"$compiled"} | tee -a "$rounds"
done
if [ "$REPEAT" != 1 ]; then
  $PYTHON - "$rounds" <<'SUMMARY'
import re, statistics, sys
ratios = {}
for line in open(sys.argv[1]):
    m = re.match(r"(.+?)\s+iwtvae .* ratio\s+([0-9.]+)x", line)
    if m:
        ratios.setdefault(m.group(1).strip(), []).append(float(m.group(2)))
for name, r in ratios.items():
    print(f"{name:44s} over {len(r)} rounds: ratio min {min(r):.2f}x  median {statistics.median(r):.2f}x  max {max(r):.2f}x")
SUMMARY
fi
if [ "${NLL_BF16:-1}" = 1 ]; then
  # Only the NLL counts here: a 1,000-image epoch trains the model it times.
  ours_bf16=$(IWTVAE_BENCH_TRAIN=1000 IWTVAE_BENCH_PRECISION=bf16 RAYON_NUM_THREADS=$THREADS \
    cargo bench -q --bench speed 2>/dev/null | tail -1)
  theirs_bf16=$(TORCH_TRAIN_STEPS=1 torch_bench --mode eager --nll-precision bf16)
  compiled_bf16=$([ "${TORCH_COMPILE:-1}" = 1 ] && TORCH_TRAIN_STEPS=1 torch_bench --mode compiled --nll-precision bf16 || true)
  echo "$ours_bf16"
  echo "$theirs_bf16"
  [ -n "$compiled_bf16" ] && echo "$compiled_bf16"
  $PYTHON benches/pytorch/ratios.py --nll-only "$ours_bf16" "$theirs_bf16" ${compiled_bf16:+"$compiled_bf16"}
fi
