#!/usr/bin/env bash
# Builds the CLI, the GPU test binary and the bench binaries here (release,
# x86-64, with the CUDA kernels) and packs them into gpu-bundle/ with a runner,
# for a GPU machine that has a CUDA driver but no Rust toolchain:
#   scripts/gpu-bundle.sh            # then, on the GPU machine, from the repo root:
#   gpu-bundle/run.sh                # GPU tests, then the benches
#   DRY_RUN=1 gpu-bundle/run.sh      # here: the runner's plumbing on the kernel emulator
#   DRY_RUN=1 FAKE_CUDA=1 gpu-bundle/run.sh   # the same through cudarc and the fake libcuda.so
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-cuda.sh
rm -rf gpu-bundle && mkdir -p gpu-bundle/tests gpu-bundle/benches
cargo build --release --bins
cp target/release/iwtvae gpu-bundle/
list() { python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] != ["bin"]:
        print(m["target"]["name"], m["executable"])'; }
# Only the GPU tests: the rest (the emulated kernels included) run in CI, and
# the device tool carries at most 64 MiB.
cargo test --release --no-run --message-format=json 2>/dev/null | list | while read -r name exe; do
  if [ "$name" = gpu_parity ]; then cp "$exe" "gpu-bundle/tests/$name"; fi
done
cargo bench --no-run --message-format=json 2>/dev/null | list | while read -r name exe; do cp "$exe" "gpu-bundle/benches/$name"; done
rm -f gpu-bundle/benches/iwtvae  # the library's empty bench harness
rm -f gpu-bundle/benches/gradient_snr  # a CPU-only estimator diagnostic; the 64 MiB are the GPU's
# The stand-in libcuda.so (crates/cuda-emu), for FAKE_CUDA=1 dry runs only.
fake=$(ls -td target/release/build/cuda-emu-*/out/fake-cuda 2>/dev/null | head -1)
if [ -n "$fake" ] && [ -f "$fake/libcuda.so" ]; then
  mkdir -p gpu-bundle/fake-cuda && cp "$fake/libcuda.so" gpu-bundle/fake-cuda/
else
  echo "note: no fake libcuda.so built; FAKE_CUDA=1 dry runs are unavailable"
fi
# A trained checkpoint for the precision measurement (checkpoints are git-ignored).
ck=results/runs/tps-iwae5-seed1/checkpoint.safetensors
if [ -f "$ck" ]; then cp "$ck" gpu-bundle/tps-iwae5.safetensors; else echo "note: $ck missing; run.sh skips the precision measurement"; fi
# Debug info is for profiling here; the device tool carries at most 64 MiB.
strip --strip-debug gpu-bundle/iwtvae gpu-bundle/tests/* gpu-bundle/benches/*
cat > gpu-bundle/run.sh <<'RUN'
#!/usr/bin/env bash
# Run from the repository root on the GPU machine: the GPU tests, an
# end-to-end CLI run on the GPU, the per-kernel benches, the precision
# measurement and the speed comparison with PyTorch on the same GPU in the
# same run. Everything printed also goes to one file, $LOGS/run.log (default
# LOGS=gpu-bundle-out); scratch files go to a temporary folder.
#
# DRY_RUN=1 runs every step here, without a GPU: iwtvae on the kernel
# emulator (--device emulated), PyTorch on the CPU (PYTHON names a python
# with torch), at toy sizes. It checks the runner itself (flags, the files
# one step hands the next, the report scripts) before GPU time is spent on
# it; its figures mean nothing. Every size below can also be set by hand.
# DRY_RUN=1 FAKE_CUDA=1 runs iwtvae's --device cuda path instead, through
# cudarc and gpu-bundle/fake-cuda/libcuda.so (the kernel emulator behind the
# driver API), so the GPU tests and every cuda step run as on the GPU
# machine, minus the hardware.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${FAKE_CUDA:-0}" = 1 ]; then
  [ "${DRY_RUN:-0}" = 1 ] || { echo "error: FAKE_CUDA=1 is for dry runs (DRY_RUN=1): its figures are not a GPU's"; exit 2; }
  fake_dir=$here/fake-cuda
  [ -f "$fake_dir/libcuda.so" ] || { echo "error: $fake_dir/libcuda.so missing (rerun scripts/gpu-bundle.sh)"; exit 2; }
  export LD_LIBRARY_PATH="$fake_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" IWTVAE_FAKE_CUDA_TRACE=1
  : "${DEVICE:=cuda}"
fi
if [ "${DRY_RUN:-0}" = 1 ]; then
  : "${DEVICE:=emulated}" "${TORCH_DEVICE:=cpu}" "${SKIP_KERNEL_BENCH:=1}"
  : "${CLI_TRAIN_IMAGES:=200}" "${CLI_EVAL_K:=0}" "${PREC_IMAGES:=3}" "${PREC_K:=100}" "${FULL_IMAGES:=3}"
  : "${BENCH_TRAIN:=200}" "${NLL_IMAGES:=2}" "${TORCH_TRAIN_STEPS:=2}" "${TORCH_NLL_IMAGES:=2}"
  : "${TORCH_NLL_BATCH:=1,2}" "${TORCH_CHUNK:=1000}"
fi
: "${DEVICE:=cuda}" "${TORCH_DEVICE:=cuda}" "${PYTHON:=python3}"
: "${CLI_TRAIN_IMAGES:=6000}" "${CLI_EVAL_K:=500}" "${PREC_IMAGES:=1000}" "${PREC_K:=5000}" "${FULL_IMAGES:=10000}"
: "${BENCH_TRAIN:=60000}" "${NLL_IMAGES:=10000}" "${TORCH_TRAIN_STEPS:=600}" "${TORCH_NLL_IMAGES:=1000}"
: "${TORCH_NLL_BATCH:=20,100}" "${TORCH_CHUNK:=1000,5000}"
logs=${LOGS:-gpu-bundle-out}
mkdir -p "$logs"
exec > >(tee -a "$logs/run.log") 2>&1
work=$(mktemp -d)
export IWTVAE_DATA=${IWTVAE_DATA:-data/mnist}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
status=0
step() { echo "== $* ($(date +%T))"; }
# Each command runs under a time limit (STEP_TIMEOUT seconds, default 150),
# so a hang in one step costs that step, not the rest of a device session.
t() {
  timeout --kill-after=10 "${STEP_TIMEOUT:-150}" "$@"
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo "TIMEOUT after ${STEP_TIMEOUT:-150} s: $*"; fi
  return $rc
}
# SKIP_TESTS=1 leaves out the GPU tests and the CLI run (a later call of a
# device session that has already run them).
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step "GPU tests"
  IWTVAE_PARITY_GPU_ONLY=1 t "$here/tests/gpu_parity" --test-threads=1 --nocapture || status=1
  # SANITIZE="memcheck racecheck synccheck" (any of them) reruns the GPU tests
  # under compute-sanitizer: out-of-bounds and misaligned accesses, shared
  # memory races and barrier misuse on the real hardware, beyond what the
  # emulator checks. Slow, and it needs hardware counters (Firecracker
  # machines, not gVisor), so it is opt-in.
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in ${SANITIZE:-}; do
    step "GPU tests under compute-sanitizer --tool $tool"
    IWTVAE_PARITY_GPU_ONLY=1 STEP_TIMEOUT=${SANITIZE_TIMEOUT:-240} t "$sanitizer" --tool "$tool" --error-exitcode 3 \
      "$here/tests/gpu_parity" --test-threads=1 || status=1
  done
  step "CLI: train 1 epoch on $CLI_TRAIN_IMAGES images on $DEVICE, eval k=$CLI_EVAL_K"
  t "$here/iwtvae" train --device "$DEVICE" --epochs 1 --limit-train "$CLI_TRAIN_IMAGES" --eval-k "$CLI_EVAL_K" \
    --out "$work/cli-run" || status=1
fi
if [ "${SKIP_KERNEL_BENCH:-0}" != 1 ]; then
  step "per-kernel benches"
  t "$here/benches/kernels" --bench --warm-up-time 1 --measurement-time 2 || status=1
fi
ck="$here/tps-iwae5.safetensors"
if [ -f "$ck" ] && [ "${SKIP_PRECISION:-0}" != 1 ]; then
  n=$PREC_IMAGES
  step "precision: NLL k=$PREC_K of the first $n test images, $DEVICE fp32/tf32/bf16 vs CPU fp32"
  t "$here/iwtvae" eval --device cpu --checkpoint "$ck" --k "$PREC_K" --limit "$n" --per-image "$work/cpu.csv" \
    --json || status=1
  # The CPU's bf16 (ops::linear_bf16) rounds as the GPU's bf16 does: the
  # two should agree far closer than either does with fp32.
  t "$here/iwtvae" eval --device cpu --precision bf16 --checkpoint "$ck" --k "$PREC_K" --limit "$n" \
    --per-image "$work/cpu-bf16.csv" --json || status=1
  for p in fp32 tf32 bf16; do
    t "$here/iwtvae" eval --device "$DEVICE" --precision $p --checkpoint "$ck" --k "$PREC_K" --limit "$n" \
      --per-image "$work/gpu-$p.csv" --json || status=1
  done
  step "NLL k=$PREC_K over the first $FULL_IMAGES test images on $DEVICE, each precision"
  for p in fp32 tf32 bf16; do
    t "$here/iwtvae" eval --device "$DEVICE" --precision $p --checkpoint "$ck" --k "$PREC_K" --limit "$FULL_IMAGES" \
      --json > "$work/full-$p.json" || status=1
    cat "$work/full-$p.json"
  done
  step "precision: which is the fastest within 0.01 nats of the CPU"
  "$PYTHON" benches/precision.py "$work/cpu.csv" "$work"/gpu-fp32.csv "$work"/gpu-tf32.csv "$work"/gpu-bf16.csv \
    --timing "$work"/full-fp32.json "$work"/full-tf32.json "$work"/full-bf16.json || status=1
  step "precision: the GPU's bf16 against the CPU's bf16 (same rounding, sums in another order)"
  "$PYTHON" benches/precision.py "$work/cpu-bf16.csv" "$work"/gpu-bf16.csv || status=1
fi
if [ "${SKIP_SPEED:-0}" != 1 ]; then
  step "speed: iwtvae on $DEVICE (epoch of $BENCH_TRAIN images, NLL k=5000 over $NLL_IMAGES test images)"
  ours=$(IWTVAE_BENCH_DEVICE=$DEVICE IWTVAE_BENCH_TRAIN=$BENCH_TRAIN IWTVAE_BENCH_NLL=$NLL_IMAGES \
    IWTVAE_BENCH_PRECISION=${BENCH_PRECISION:-auto} t "$here/benches/speed" | tail -1)
  echo "$ours"
  # The same with training's GEMMs on the TF32 tensor cores (train
  # --precision tf32); TRAIN_TF32=0 leaves it out.
  ours_tf32=
  if [ "${TRAIN_TF32:-1}" = 1 ]; then
    step "speed: iwtvae on $DEVICE, training --precision tf32"
    ours_tf32=$(IWTVAE_BENCH_DEVICE=$DEVICE IWTVAE_BENCH_TRAIN=$BENCH_TRAIN IWTVAE_BENCH_NLL=$NLL_IMAGES \
      IWTVAE_BENCH_PRECISION=${BENCH_PRECISION:-auto} IWTVAE_BENCH_TRAIN_PRECISION=tf32 t "$here/benches/speed" | tail -1)
    echo "$ours_tf32"
  fi
  torch_bench=("$PYTHON" benches/pytorch/iwtvae_torch.py bench --device "$TORCH_DEVICE"
    --train-steps "$TORCH_TRAIN_STEPS" --nll-images "$TORCH_NLL_IMAGES")
  step "speed: PyTorch eager on $TORCH_DEVICE (TF32, batched; NLL the fastest of images $TORCH_NLL_BATCH x samples $TORCH_CHUNK per forward)"
  theirs=$(t "${torch_bench[@]}" --nll-batch "$TORCH_NLL_BATCH" --chunk "$TORCH_CHUNK" | tail -1)
  echo "$theirs"
  compiled=()
  # torch.compile in runs of their own, at eager's fastest NLL shape (each
  # shape compiles anew), under a longer limit: compiling takes a minute or
  # more, and a failure or timeout loses only that run's figures. compiled
  # is the default mode; graphs is reduce-overhead, CUDA graphs on a GPU, as
  # iwtvae's training uses (TORCH_COMPILE=0 or TORCH_GRAPHS=0 leave one out).
  modes=()
  [ "${TORCH_COMPILE:-1}" = 1 ] && modes+=(compiled)
  [ "${TORCH_GRAPHS:-1}" = 1 ] && modes+=(graphs)
  if [ ${#modes[@]} -gt 0 ]; then
    shape=$(echo "$theirs" | "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin); print(r["nll_batch"], r["chunk"])' \
      2>/dev/null || echo "20 1000")
  fi
  for mode in "${modes[@]}"; do
    step "speed: PyTorch, torch.compile --mode $mode, on $TORCH_DEVICE (NLL at images x samples = $shape)"
    run=$(STEP_TIMEOUT=${TORCH_COMPILE_TIMEOUT:-300} t "${torch_bench[@]}" --mode "$mode" --nll-batch "${shape% *}" \
      --chunk "${shape#* }" | tail -1)
    echo "$run"
    compiled+=("$run")
  done
  "$PYTHON" benches/pytorch/ratios.py "$ours" "$theirs" "${compiled[@]}" || status=1
  if [ -n "$ours_tf32" ]; then
    "$PYTHON" benches/pytorch/ratios.py "$ours_tf32" "$theirs" "${compiled[@]}" || status=1
  fi
fi
rm -rf "$work"
step "done, status $status"
exit $status
RUN
chmod +x gpu-bundle/run.sh
du -sh gpu-bundle; ls gpu-bundle gpu-bundle/tests
