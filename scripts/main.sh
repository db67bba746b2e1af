#!/usr/bin/env bash
# The main job: set up .venv/ if needed, then run the default experiment
# (CIFAR-10, 40% symmetric noise, DATM at IPC 10, quick preset) and print its table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/data-root.sh
exec .venv/bin/ddlnl run "$@"
