#!/usr/bin/env bash
# The emulated-GPU tests under AddressSanitizer: the kernels (kernels/*.cu,
# compiled as C++ by crates/cuda-emu) are instrumented, and a buffer's guard
# zones and the dynamic shared memory past a launch's size are marked
# unaddressable, so any out-of-bounds read or write in a kernel (the
# emulator's own guard check sees only writes) stops the run with a report
# naming the source line. The closest CI can come to compute-sanitizer's
# memcheck without a GPU. Uses gcc's libasan; builds into target/asan.
#   scripts/emu-asan.sh            # every emulated suite
#   scripts/emu-asan.sh emulated_layers
set -euo pipefail
cd "$(dirname "$0")/.."
libasan=$(gcc -print-file-name=libasan.so)
[ -f "$libasan" ] || { echo "error: gcc's libasan.so not found (Debian: libasan8)"; exit 1; }
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(emulated_kernels emulated_layers emulated_block_order emulated_capture gpu_parity)
export CARGO_TARGET_DIR=target/asan
# Only the C++ is instrumented (Rust's sanitizers need nightly); the Rust
# side links gcc's runtime, which must come first in the process.
export CXXFLAGS="-fsanitize=address -fno-omit-frame-pointer"
export RUSTFLAGS="-C link-arg=$libasan"
args=()
for s in "${suites[@]}"; do args+=(--test "$s"); done
cargo test --release --no-run "${args[@]}" 2>&1 | grep -v "^\s*Executable" || true
status=0
for s in "${suites[@]}"; do
  exe=$(ls -t "$CARGO_TARGET_DIR"/release/deps/"$s"-* | grep -v '\.d$' | head -1)
  echo "== $s under AddressSanitizer"
  # The fibers switch stacks with swapcontext, which ASan tracks with a
  # one-time warning; leaks are not this check's business.
  LD_PRELOAD=$libasan ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 "$exe" --test-threads=2 2>&1 \
    | grep -v "doesn't fully support makecontext" || status=1
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
echo "AddressSanitizer: $([ $status -eq 0 ] && echo clean || echo FAILED)"
exit $status
