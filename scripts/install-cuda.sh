#!/usr/bin/env bash
# Installs a pinned CUDA 13.0 compiler from PyPI into .cuda/ (git-ignored), where
# build.rs finds it. The four compiler pins matter: an unpinned nvvm emits PTX 9.5,
# which a 13.0 driver rejects. The fifth, CCCL, brings the headers that
# cuda_bf16.h needs (nv/target) for the bf16 tensor-core evaluator.
# Idempotent; a no-op when the pinned versions are present.
set -euo pipefail
cd "$(dirname "$0")/.."
PINS=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
STAMP=.cuda/.pins
if [ -x .cuda/nvidia/cu13/bin/nvcc ] && [ "$(cat "$STAMP" 2>/dev/null)" = "${PINS[*]}" ]; then
  echo "CUDA toolchain present: $(.cuda/nvidia/cu13/bin/nvcc --version | tail -1)"
  exit 0
fi
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install --quiet --disable-pip-version-check --target .cuda --upgrade "${PINS[@]}"
echo "${PINS[*]}" > "$STAMP"
echo "installed: $(.cuda/nvidia/cu13/bin/nvcc --version | tail -1)"
