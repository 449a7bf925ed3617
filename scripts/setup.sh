#!/usr/bin/env bash
# Create .venv and install mimo into it (idempotent). Sourced by quickstart.sh and test.sh.
#
# torch: on this project's CPU machines `pip install torch==2.13.0` takes a local CPU wheel. On a GPU box
# set MIMO_TORCH to the torch you want (e.g. MIMO_TORCH="torch==2.13.0" with your CUDA index configured),
# or install torch into .venv yourself first: an installed torch is kept.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q "${MIMO_TORCH:-torch==2.13.0}"
fi
python -m pip install -q -e ".${MIMO_EXTRAS:-}"
