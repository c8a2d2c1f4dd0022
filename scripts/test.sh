#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. Without a GPU the Triton kernels run in the
# interpreter on CPU tensors; with one they are compiled and the GPU tests run too.
#
#   scripts/test.sh [pytest args]            the main suite in .venv
#   scripts/test.sh --deepinv [pytest args]  the deepinv interop tests in .venv-deepinv
#
# deepinv needs a torchvision built for the installed torch, which the light CPU torch of .venv
# does not have: .venv-deepinv holds a matching torch + torchvision pair from the package index,
# the pinned deepinv release and this package, and runs tests/interop/ (test_deepinv_upstream.py
# runs deepinv's own installed tests with fastsd's classes substituted).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--deepinv" ]; then
  shift
  VENV=.venv-deepinv
  PY=${PYTHON:-python3}
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -c "import torchvision" 2>/dev/null || "$VENV/bin/python" -m pip install -q \
    "torch==${FASTSD_DEEPINV_TORCH:-2.14.1}" "torchvision==${FASTSD_DEEPINV_TORCHVISION:-0.29.1}"
  # ptwt: deepinv's unfolded-algorithm tests need it
  FASTSD_BUILD_CUDA=0 "$VENV/bin/python" -m pip install -q -e ".[test]" "deepinv==${FASTSD_DEEPINV_VERSION:-0.5.0}" \
    "ptwt==1.0.1"
  TESTS=(tests/interop)
else
  bash scripts/setup.sh
  VENV=.venv
  TESTS=()
fi
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export TRITON_INTERPRET=1
fi
if [ "$VENV" = .venv ]; then
  .venv/bin/ruff check .  # lint first (rules: pyproject.toml [tool.ruff])
fi
exec "$VENV/bin/python" -m pytest -q "${TESTS[@]}" "$@"
