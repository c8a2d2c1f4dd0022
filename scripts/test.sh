#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. Without a GPU the Triton kernels run in the
# interpreter on CPU tensors; with one they are compiled and the GPU tests run too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export TRITON_INTERPRET=1
fi
.venv/bin/ruff check .  # lint first (rules: pyproject.toml [tool.ruff])
exec .venv/bin/python -m pytest -q "$@"
