"""The fingerprint of what the lock was resolved from, so a stale lock is refused instead of installed.

    python3 scripts/lock_inputs.py                 # prints the sha256 of the current inputs
    python3 scripts/lock_inputs.py --check LOCK    # exit 1 with one line when LOCK was made from other inputs

The inputs are pyproject.toml's [project.dependencies], the extras the locks cover, TORCH_SPEC (torch is
installed first and stays outside the lock, but its own dependencies are in it) and the holds file. Only
the standard library: the bootstrap runs this before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKED_EXTRAS = ("local", "test", "bench")
DEFAULT_TORCH_SPEC = "torch==2.13.0"
HOLDS = ROOT / "scripts" / "lock-holds.txt"
MARKER = "# inputs-sha256: "


def torch_spec() -> str:
    return os.environ.get("TORCH_SPEC") or DEFAULT_TORCH_SPEC


def inputs_sha256(pyproject: Path = ROOT / "pyproject.toml") -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    holds = [line.split("#")[0].strip() for line in HOLDS.read_text().splitlines()] if HOLDS.exists() else []
    inputs = {
        "dependencies": sorted(project.get("dependencies", [])),
        "extras": {name: sorted(extras.get(name, [])) for name in LOCKED_EXTRAS},
        "torch_spec": torch_spec(),
        "holds": sorted(h for h in holds if h),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_sha256(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(MARKER):
            return line[len(MARKER):].strip()
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=Path, metavar="LOCK", help="refuse LOCK if it was made from other inputs")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml", help=argparse.SUPPRESS)
    args = parser.parse_args()
    current = inputs_sha256(args.pyproject)
    if args.check is None:
        print(current)
        return 0
    if not args.check.exists():
        print(f"Error: {args.check.name} is missing; make it with: bash scripts/lock.sh", file=sys.stderr)
        return 1
    if recorded_sha256(args.check) != current:
        print(f"Error: {args.check.name} is stale (pyproject.toml's dependencies, TORCH_SPEC={torch_spec()} or "
              "scripts/lock-holds.txt changed since it was made); refresh it with: bash scripts/lock.sh",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
