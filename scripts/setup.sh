#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with a CPU build of torch (where no CUDA
# torch is present already), this package in editable mode, and the test, data, scanner and baselines extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Install torch first so that no later requirement pulls a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==${FASTSD_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[test,data,scanner,baselines]"
