#!/usr/bin/env bash
# Create or reuse .venv/ with ddlnl installed; CPU torch 2.13.0 when no torch is present.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  # An unpinned torch would pull a multi-GB CUDA build; 2.13.0 is the CPU build on this machine.
  .venv/bin/pip install -q torch==2.13.0
fi
stamp=.venv/.ddlnl-install-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/ddlnl ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
