"""Several `pokevq` commands in one interpreter, each through `pokevq.cli.main` (what the command runs), so
the imports (torch, Prefect) are paid once instead of once per case."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

_SCRIPT = r"""
import json, os, sys, traceback
from pokevq import cli

for name, args, drop, put in json.loads(sys.argv[1]):
    saved = {key: os.environ.pop(key) for key in [*drop, *put] if key in os.environ}
    os.environ.update(put)
    sys.stderr.flush()
    print(f"@@case {name}", flush=True)
    try:
        rc = cli.main(args)
    except SystemExit as exc:  # argparse refused a flag
        rc = exc.code
    except Exception:  # a crash: its traceback is this case's output, and the next cases still run
        traceback.print_exc()
        rc = -1
    sys.stderr.flush()
    print(f"@@rc {rc}", flush=True)
    for key in put:
        os.environ.pop(key, None)
    os.environ.update(saved)
"""


def run_cli_cases(cases: dict[str, tuple], env: dict[str, str], cwd: Path,
                  timeout: float = 400) -> dict[str, tuple[int, str]]:
    """name -> (exit code, what the command wrote to stdout and stderr) for each case `name -> (args, drop)`
    or `name -> (args, drop, put)`, where `drop` names environment variables removed and `put` (a dict)
    environment variables set for that case only."""
    rows = [[name, case[0], case[1], case[2] if len(case) > 2 else {}] for name, case in cases.items()]
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(rows)],
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
