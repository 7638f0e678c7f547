"""Several `pokevq` commands in one interpreter, each through `pokevq.cli.main` (what the command runs), so
the imports (torch, Prefect) are paid once instead of once per case."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

_SCRIPT = r"""
import json, os, sys
from pokevq import cli

for name, args, drop in json.loads(sys.argv[1]):
    saved = {key: os.environ.pop(key) for key in drop if key in os.environ}
    sys.stderr.flush()
    print(f"@@case {name}", flush=True)
    rc = cli.main(args)
    sys.stderr.flush()
    print(f"@@rc {rc}", flush=True)
    os.environ.update(saved)
"""


def run_cli_cases(cases: dict[str, tuple[list[str], list[str]]], env: dict[str, str], cwd: Path,
                  timeout: float = 400) -> dict[str, tuple[int, str]]:
    """name -> (exit code, what the command wrote to stdout and stderr) for each case `name -> (args, drop)`,
    where `drop` names environment variables removed for that case only."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps([[name, args, drop] for name, (args, drop) in cases.items()])],
        env={**env, "PYTHONUNBUFFERED": "1"}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    found = {}
    for chunk in done.stdout.split("@@case ")[1:]:
        name, _, output = chunk.partition("\n")
        rc = re.search(r"^@@rc (-?\d+)$", output, re.M)
        assert rc, output[-2000:]
        found[name] = (int(rc.group(1)), output[: rc.start()])
    assert sorted(found) == sorted(cases), done.stdout[-3000:]
    return found
