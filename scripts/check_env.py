"""CI's check that the installed environment is exactly the lock: same packages, same versions.

    .venv/bin/python scripts/check_env.py requirements.lock

Ignored: the editable pokevq itself, pip and setuptools (the venv's own tools), and torch's local build
label (2.13.0+cpu is torch 2.13.0). torch is not in the lock; it must match TORCH_SPEC's pinned version.
With a CUDA build of torch (TORCH_SPEC from another index), the packages that torch itself requires
and the lock does not name (nvidia-*, triton) are allowed too. Anything else outside the lock, or at
another version, fails with one line per package.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path

IGNORED = {"pokevq", "pip", "setuptools"}
DEFAULT_TORCH_SPEC = "torch==2.13.0"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)", line)
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def torch_requirements() -> set[str]:
    try:
        requires = metadata.requires("torch") or []
    except metadata.PackageNotFoundError:
        return set()
    return {normalise(re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0]) for r in requires}


def problems(lock: Path) -> list[str]:
    pins = locked_versions(lock)
    torch_spec = os.environ.get("TORCH_SPEC") or DEFAULT_TORCH_SPEC
    wanted_torch = torch_spec.split("==", 1)[1].strip() if "==" in torch_spec else None
    extra_allowed = torch_requirements() - set(pins) if torch_spec != DEFAULT_TORCH_SPEC else set()
    found: list[str] = []
    installed: dict[str, str] = {}
    for dist in metadata.distributions():
        installed[normalise(dist.metadata["Name"])] = dist.version
    for name, version in sorted(installed.items()):
        if name in IGNORED or name in extra_allowed:
            continue
        if name == "torch":
            if wanted_torch and version.split("+", 1)[0] != wanted_torch:
                found.append(f"torch {version} is installed but TORCH_SPEC asks for {torch_spec}")
            continue
        if name not in pins:
            found.append(f"{name} {version} is installed but not in {lock.name}")
        elif pins[name] != version:
            found.append(f"{name} {version} is installed but {lock.name} pins {pins[name]}")
    for name in sorted(set(pins) - set(installed) - IGNORED):
        found.append(f"{name} {pins[name]} is in {lock.name} but not installed")
    return found


def main() -> int:
    lock = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "requirements.lock"
    found = problems(lock)
    for line in found:
        print(f"Error: {line}; reinstall with bash scripts/bootstrap.sh (or refresh with bash scripts/lock.sh)",
              file=sys.stderr)
    if not found:
        print(f"The environment matches {lock.name}: {len(locked_versions(lock))} packages at the locked versions.")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
