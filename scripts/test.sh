#!/usr/bin/env bash
# The tests: set up .venv/ if needed, then run pytest (real-data tests run when $DDLNL_DATA is set).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/data-root.sh
exec .venv/bin/python -m pytest -q "$@"
