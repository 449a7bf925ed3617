#!/usr/bin/env bash
# The main job: set up .venv, then run the tiny end-to-end pipeline (extra args go to `mimo quickstart`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
mimo quickstart "$@"
