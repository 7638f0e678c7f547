#!/usr/bin/env bash
# The one way to take new package versions on purpose: re-resolve the locks, print what moved, run the suite.
#
#   bash scripts/lock.sh            # newest versions everywhere pyproject.toml's ranges and the holds allow
#   bash scripts/lock.sh --keep     # keep every pin that still fits; resolve only what changed (a new dependency)
#   bash scripts/lock.sh --no-test  # skip the suite (it runs by default: a refresh is taken only when it passes)
#
# requirements.lock holds every package the bootstrap installs besides torch (the local and test extras, for
# Python 3.11 on Linux x86_64); requirements-bench.lock adds the bench extra (the emulator) on the same pins.
# torch stays outside both: it is installed first from TORCH_SPEC. The resolver reads the CPU wheel's metadata
# (TORCH_FIND_LINKS, default: pip's find-links, else PyTorch's CPU wheel page), so no CUDA package is locked.
set -euo pipefail
cd "$(dirname "$0")/.."

upgrade=--upgrade
run_tests=1
for arg in "$@"; do
    case "$arg" in
        --keep) upgrade= ;;
        --no-test) run_tests=0 ;;
        *) echo "Error: unknown option $arg (use --keep or --no-test)" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3}
UV_VERSION=0.13.9  # the lock tool is pinned too
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export TORCH_SPEC
find_links=${TORCH_FIND_LINKS:-${PIP_FIND_LINKS:-$("$PYTHON" -m pip config get global.find-links 2>/dev/null || true)}}
find_links=${find_links:-https://download.pytorch.org/whl/cpu/torch/}

if [ ! -x .venv-lock/bin/uv ] || [ "$(.venv-lock/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    "$PYTHON" -m venv .venv-lock
    .venv-lock/bin/python -m pip install --quiet "uv==$UV_VERSION" 2>&1 | grep -v '^WARNING: Location' || true
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "$TORCH_SPEC" > "$work/torch.txt"
sha=$("$PYTHON" scripts/lock_inputs.py)

compile() {  # compile OUT EXTRA... : resolve pyproject.toml with the extras into OUT (its old pins as preferences)
    local out=$1; shift
    local extras=()
    for extra in "$@"; do extras+=(--extra "$extra"); done
    [ -f "$out" ] && cp "$out" "$work/old-$(basename "$out")" || touch "$work/old-$(basename "$out")"
    cp "$work/old-$(basename "$out")" "$work/new.txt"
    .venv-lock/bin/uv pip compile pyproject.toml "${extras[@]}" $upgrade --quiet \
        --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --find-links "$find_links" -c "$work/torch.txt" -c scripts/lock-holds.txt "${constraints[@]}" \
        --no-emit-package torch --no-header --output-file "$work/new.txt"
    if grep -qiE '^(nvidia-|triton)' "$work/new.txt"; then
        echo "Error: the resolution pulled CUDA packages (nvidia-*, triton): torch's CPU wheel was not found at" \
             "$find_links; set TORCH_FIND_LINKS to a folder or page that holds it" >&2
        exit 1
    fi
    {
        echo "# pokevq's lock for Python 3.11 on Linux x86_64: the extras ${*}, every package but torch."
        echo "# Made by: bash scripts/lock.sh (uv $UV_VERSION, torch from TORCH_SPEC=$TORCH_SPEC). Do not edit by hand."
        echo "$MARKER$sha"
        cat "$work/new.txt"
    } > "$out"
    "$PYTHON" - "$work/old-$(basename "$out")" "$out" <<'EOF'
import re, sys
def pins(path):
    found = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)", line)
        if m:
            found[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return found
old, new = pins(sys.argv[1]), pins(sys.argv[2])
moved = [f"  {n}: {old.get(n, '(new)')} -> {new.get(n, '(gone)')}" for n in sorted(old.keys() | new.keys())
         if old.get(n) != new.get(n)]
print(f"{sys.argv[2]}: {len(new)} packages, " + (f"{len(moved)} moved:" if moved else "nothing moved"))
print("\n".join(moved)) if moved else None
EOF
}
MARKER="# inputs-sha256: "
constraints=()
compile requirements.lock local test
constraints=(-c requirements.lock)
compile requirements-bench.lock local test bench

if [ "$run_tests" = 1 ]; then
    echo "Running the suite on the new lock (the bootstrap reinstalls it)..."
    bash scripts/test.sh
fi
