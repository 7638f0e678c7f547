#!/usr/bin/env bash
# Create .venv and install pokevq with its test and local-S3 extras. Safe to run again:
# it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# torch is installed first and pinned: a CPU build where one is available locally; GPU users can
# set TORCH_SPEC (e.g. "torch==2.13.0" from their CUDA index) — pyproject.toml only asks for a range.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "pokevq needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.pokevq-installed
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1) $TORCH_SPEC"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "Installing pokevq into .venv (first run takes a few minutes)..."
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC" 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c 'import torch, prefect, boto3, moto, pokevq' || { echo "Installation failed: see the pip output above." >&2; exit 1; }
    echo "$want" > "$stamp"
fi
