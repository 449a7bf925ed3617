#!/usr/bin/env bash
# RL on the quickstart's model (runs the quickstart first if its model is missing); extra args are
# recipe overrides for `mimo rl recipes/rl-tiny.yaml`, e.g. steps=60.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
[ -d runs/quickstart/sft/model ] || mimo quickstart
mimo rl recipes/rl-tiny.yaml "$@"
mimo plot runs/rl
