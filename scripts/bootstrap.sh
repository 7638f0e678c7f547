#!/usr/bin/env bash
# Create .venv and install pokevq with its test and local-S3 extras at the locked versions
# (requirements.lock), so the demo, the tests and CI get the same packages on any day. Safe to run
# again: it reinstalls only when pyproject.toml, the lock, this script or TORCH_SPEC changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# torch is installed first and stays outside the lock: a CPU build where one is available locally. GPU
# users set TORCH_SPEC and TORCH_INDEX_URL (e.g. TORCH_SPEC=torch==2.13.0 and PyTorch's CUDA index):
# torch and its CUDA packages come from there, everything else from the lock.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export TORCH_SPEC
LOCK=requirements.lock
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "pokevq needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
    exit 1
fi
locked=1
target=$("$PYTHON" -c 'import platform, sys; print(f"Python {sys.version_info[0]}.{sys.version_info[1]} on {platform.system()} {platform.machine()}")')
if [ "$target" != "Python 3.11 on Linux x86_64" ]; then
    locked=0
    echo "$target: $LOCK covers Python 3.11 on Linux x86_64, so this installs from pyproject.toml's ranges instead (versions may differ from CI's)."
else
    "$PYTHON" scripts/lock_inputs.py --check "$LOCK"
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.pokevq-installed
want="$(cat pyproject.toml scripts/bootstrap.sh "$LOCK" | sha256sum | cut -d' ' -f1) $TORCH_SPEC $locked"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "Installing pokevq into .venv (first run takes a few minutes)..."
    torch_index=()
    [ -n "${TORCH_INDEX_URL:-}" ] && torch_index=(--extra-index-url "$TORCH_INDEX_URL")
    if [ "$locked" = 1 ]; then
        # torch's own dependencies (sympy, filelock, ...) are in the lock: constrain them to it.
        "${pip[@]}" "${torch_index[@]}" -c "$LOCK" "$TORCH_SPEC" 2>&1 | grep -v '^WARNING: Location' || true
        "${pip[@]}" -r "$LOCK" 2>&1 | grep -v '^WARNING: Location' || true
        "${pip[@]}" --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true
    else
        "${pip[@]}" "${torch_index[@]}" "$TORCH_SPEC" 2>&1 | grep -v '^WARNING: Location' || true
        "${pip[@]}" -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
    fi
    .venv/bin/python -c 'import torch, prefect, boto3, moto, pokevq' || { echo "Installation failed: see the pip output above." >&2; exit 1; }
    echo "$want" > "$stamp"
fi
