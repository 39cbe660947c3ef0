#!/usr/bin/env bash
# Builds the CLI, the test binaries and the bench binaries here (release,
# x86-64, with the CUDA kernels) and packs them into gpu-bundle/ with a runner,
# for a GPU machine that has a CUDA driver but no Rust toolchain:
#   scripts/gpu-bundle.sh            # then, on the GPU machine, from the repo root:
#   gpu-bundle/run.sh                # GPU tests, then the benches
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
cargo test --release --no-run --message-format=json 2>/dev/null | list | while read -r name exe; do cp "$exe" "gpu-bundle/tests/$name"; done
cargo bench --no-run --message-format=json 2>/dev/null | list | while read -r name exe; do cp "$exe" "gpu-bundle/benches/$name"; done
rm -f gpu-bundle/benches/iwtvae  # the library's empty bench harness
# Debug info is for profiling here; the device tool carries at most 64 MiB.
strip --strip-debug gpu-bundle/iwtvae gpu-bundle/tests/* gpu-bundle/benches/*
cat > gpu-bundle/run.sh <<'RUN'
#!/usr/bin/env bash
# Run from the repository root on the GPU machine.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
status=0
"$here/tests/gpu_parity" --test-threads=1 --nocapture || status=1
ck=${CHECKPOINT:-results/runs/tps-iwae5-seed1/checkpoint.safetensors}
if [ -f "$ck" ]; then
  for dev in cuda cpu; do
    "$here/iwtvae" eval --device $dev --checkpoint "$ck" --k 5000 --limit 200 --json || status=1
  done
  "$here/iwtvae" eval --device cuda --checkpoint "$ck" --k 5000 --json || status=1
fi
exit $status
RUN
chmod +x gpu-bundle/run.sh
du -sh gpu-bundle; ls gpu-bundle gpu-bundle/tests
