"""The locked install: the committed lock matches pyproject.toml, a stale one is refused in one line naming
the refresh script, no CUDA package is locked, and CI's environment check catches a package that moved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCKS = (ROOT / "requirements.lock", ROOT / "requirements-bench.lock")


def _check(pyproject: Path, lock: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock_inputs.py"), "--check", str(lock), "--pyproject", str(pyproject)],
        capture_output=True, text=True, env={**os.environ, **env},
    )


def test_the_committed_locks_were_made_from_the_current_inputs() -> None:
    for lock in LOCKS:
        result = _check(ROOT / "pyproject.toml", lock, TORCH_SPEC="torch==2.13.0")
        assert result.returncode == 0, result.stderr


def test_a_dependency_added_without_a_refresh_is_refused_in_one_line(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    pyproject.write_text(text.replace('"numpy>=1.26",', '"numpy>=1.26",\n    "zstandard>=0.22",'))
    assert pyproject.read_text() != text
    result = _check(pyproject, ROOT / "requirements.lock", TORCH_SPEC="torch==2.13.0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: requirements.lock is stale")
    assert "bash scripts/lock.sh" in lines[0]


def test_another_torch_spec_makes_the_lock_stale() -> None:
    result = _check(ROOT / "pyproject.toml", ROOT / "requirements.lock", TORCH_SPEC="torch==2.14.1")
    assert result.returncode == 1 and "TORCH_SPEC=torch==2.14.1" in result.stderr


def test_no_cuda_package_and_no_torch_is_locked_and_moto_is_held() -> None:
    for lock in LOCKS:
        names = [line.split("==")[0].lower() for line in lock.read_text().splitlines() if "==" in line
                 and not line.startswith("#")]
        assert names, lock
        assert not [n for n in names if n.startswith(("nvidia-", "triton", "torch"))]
        assert "moto==5.2.6" not in lock.read_text()
    assert "moto!=5.2.6" in (ROOT / "scripts" / "lock-holds.txt").read_text()


def test_the_environment_check_names_a_package_at_another_version(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_env
    finally:
        sys.path.pop(0)
    from importlib.metadata import version

    lock = tmp_path / "requirements.lock"
    lock.write_text(f"pytest==0.0.1\nnot-a-real-package==1.0\npluggy=={version('pluggy')}\n")
    found = check_env.problems(lock)
    assert f"pytest {version('pytest')} is installed but requirements.lock pins 0.0.1" in found
    assert "not-a-real-package 1.0 is in requirements.lock but not installed" in found
    assert f"iniconfig {version('iniconfig')} is installed but not in requirements.lock" in found
    assert not [line for line in found if line.startswith("pluggy ")]
