#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: SDI on a bundled real MRI slice.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fastsd demo "$@"
