#!/usr/bin/env bash
# The machine code (SASS) nvcc makes of a kernel, without a GPU: what the
# scheduler did with its loads, how many registers it takes, what it spills.
#   scripts/sass.sh kernels/nll_fused.cu               # every kernel of the file
#   scripts/sass.sh kernels/nll_fused.cu nll_fc3_tf32  # one kernel
#   ARCH=80 scripts/sass.sh kernels/linear.cu          # another architecture
# Compiles with the project's nvcc (scripts/install-cuda.sh) and the flags of
# build.rs; disassembles with cuobjdump and nvdisasm from PyPI, installed
# into .cuda/tools (git-ignored). CUDA 13.0 has no cuobjdump on PyPI; 13.2's
# reads 13.0's cubins.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/sass.sh kernels/FILE.cu [KERNEL]" >&2; exit 2; }
src=$1
kernel=${2:-}
[ -f "$src" ] || { echo "error: $src: no such kernel source" >&2; exit 2; }
scripts/install-cuda.sh >/dev/null
tools=.cuda/tools/nvidia/cu13/bin
if [ ! -x "$tools/cuobjdump" ] || [ ! -x "$tools/nvdisasm" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target .cuda/tools \
    nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.5.37
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
arch=${ARCH:-90}
# Registers, shared memory and spills per kernel, as ptxas reports them.
.cuda/nvidia/cu13/bin/nvcc -cubin -O3 -std=c++17 -arch="sm_$arch" -Ikernels -Xptxas -v \
  -o "$work/k.cubin" "$src" 2>&1 | grep -E "Compiling entry|Used|spill" | sed 's/^ptxas info *: //' >&2
PATH="$tools:$PATH" "$tools/cuobjdump" -sass "$work/k.cubin" > "$work/k.sass"
if [ -n "$kernel" ]; then
  awk -v k="Function : $kernel" '$0 ~ /Function : / { on = index($0, k) > 0 && $NF == substr(k, 12) } on' "$work/k.sass"
else
  cat "$work/k.sass"
fi
