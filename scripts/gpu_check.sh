#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py) on a CUDA machine that has torch but no nerfstudio or gsplat,
# and no package registry. Two halves:
#
#   bash scripts/gpu_check.sh fetch     # here (with network): gsplat's pinned wheel into .whl/
#   bash scripts/gpu_check.sh [--quick] # there: install .whl/ into /tmp/site, JIT-build gsplat's
#                                       # CUDA backend (Hopper only, all cores), run the check
#
# With the device tool:  run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
# The table goes to stdout and to $OUT/gpu_check.md when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
GSPLAT=gsplat==1.4.0

if [ "${1:-}" = fetch ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  mkdir -p .whl
  # gsplat 1.4.0 is a pure-Python wheel that compiles its CUDA sources on first use.
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "$GSPLAT"
  ls -la .whl
  exit 0
fi

PY=${PYTHON:-python3}
ls .whl/gsplat-*.whl >/dev/null 2>&1 || { echo "gpu_check: error: no .whl/gsplat-*.whl (run 'bash scripts/gpu_check.sh fetch' first and carry .whl)" >&2; exit 2; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# Build only for the GPU at hand (sm_90 on an H200), with every core.
cap=$("$PY" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}.{n}")')
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$cap}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" PYTHONUNBUFFERED=1
echo "gpu_check: building gsplat's CUDA backend for sm_$cap with $MAX_JOBS jobs (once per machine)"
t0=$(date +%s)
"$PY" -c 'from gsplat.cuda._backend import _C; assert _C is not None, "gsplat CUDA backend failed to build"'
echo "gpu_check: gsplat built in $(( $(date +%s) - t0 )) s"
if [ -n "${OUT:-}" ]; then
  "$PY" scripts/gpu_check.py "$@" | tee "$OUT/gpu_check.md"
else
  "$PY" scripts/gpu_check.py "$@"
fi
