#!/usr/bin/env bash
# One GPU session's checks, in the order that matters when time runs out: install (offline, no
# dependencies pulled), the side-by-side benchmark (copy ceiling, training-step levers, full-solve
# anchor), then the GPU tests of the training-step paths. Writes everything under ${OUT:-gpu-out}.
#   FASTSD_COMMIT=$(git rev-parse HEAD) bash benchmarks/gpu_check.sh [bench budget s] [test timeout s]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used --format=csv | tee "$OUT/gpu.txt"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 1; }
python3 -c "import torch, triton, fastsd; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout $(( ${1:-380} + 60 )) python3 -m benchmarks.run --only copy,levers,anchor --budget-s "${1:-380}" --out "$OUT" \
  2>&1 | tee "$OUT/bench.log" | grep -v "^|" | tail -60
timeout "${2:-90}" python3 -m pytest -q -x -p no:cacheprovider tests/kernels/test_batchnorm.py tests/kernels/test_upcat.py tests/solvers/test_sdi_fast_paths.py tests/kernels/test_mri_kernels.py tests/ops/test_mri3d.py \
  tests/solvers/test_step_graph.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -8
grep -h "^|" "$OUT"/*.md | grep -E "target|step_ms|speedup|delta|volume" | tail -20
