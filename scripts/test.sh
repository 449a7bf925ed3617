#!/usr/bin/env bash
# The test command: set up .venv with the dev extras, then run the whole suite (extra args go to pytest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MIMO_EXTRAS="[dev]" source scripts/setup.sh
python -m pytest -q "$@"
