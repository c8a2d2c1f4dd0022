#!/usr/bin/env bash
# A whole GPU session in one device call, in the order of the open issues: the network training
# step (benchmarks/gpu_check.sh: install, copy/levers/anchor benchmark, GPU tests of the step's
# kernels) and then the native MRI extension (scripts/native_gpu_check.sh: build, smoke test, GPU
# tests, benchmark section 'native'), and, when given a budget, the compute-quality frontier at paper
# size (benchmark section 'frontier': paper U-Net, 320², 16 slices). Everything lands under ${OUT:-gpu-out}.
#   FASTSD_COMMIT=$(git rev-parse HEAD) bash scripts/gpu_session.sh [step bench s] [step tests s] [native tests s] [native bench s] [frontier s]
# The defaults (240 + 60 + 60 + 120 s, plus install and build; frontier 0 = skipped) are sized for one 600 s
# call; the frontier wants a call of its own (e.g. 0 0 0 0 540).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-gpu-out}
bash benchmarks/gpu_check.sh "${1:-240}" "${2:-60}"
bash scripts/native_gpu_check.sh "${3:-60}" "${4:-120}"
if [ "${5:-0}" -gt 0 ]; then
  timeout $(( ${5} + 60 )) python3 -m benchmarks.run --only frontier --budget-s "${5}" --out "$OUT" \
    2>&1 | tee "$OUT/frontier.log" | grep -v "^|" | tail -40
fi
