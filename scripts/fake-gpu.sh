#!/usr/bin/env bash
# The GPU halves of the test suites without a GPU: each named test binary
# runs with crates/cuda-emu's stand-in libcuda.so (src/fake_driver.cpp) first
# on LD_LIBRARY_PATH, so "GPU 0" is the fake driver: cudarc's real calls
# (module loading, launches, copies, stream capture, graph replay) with every
# kernel run by the emulator. What a GPU adds beyond this is the hardware
# itself: timing, the real compiler's SASS, atomics' order, FMA contraction.
#   scripts/fake-gpu.sh                 # gpu_parity (about 2 minutes on 2 cores)
#   scripts/fake-gpu.sh gpu_parity emulated_capture
set -euo pipefail
cd "$(dirname "$0")/.."
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(gpu_parity)
args=()
for s in "${suites[@]}"; do args+=(--test "$s"); done
cargo test --release --no-run "${args[@]}" 2>&1 | grep -v "^\s*Executable" || true
dir=$(ls -td target/release/build/cuda-emu-*/out/fake-cuda 2>/dev/null | head -1)
[ -n "$dir" ] && [ -f "$dir/libcuda.so" ] || { echo "error: no fake libcuda.so under target/release/build/cuda-emu-*/out (see cuda-emu's build warning)"; exit 1; }
echo "fake driver: $dir/libcuda.so"
LD_LIBRARY_PATH="$PWD/$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" IWTVAE_FAKE_CUDA_TRACE=1 \
  cargo test --release "${args[@]}" -- --test-threads=2
