"""How fast a run answers when its S3 endpoint is down, against the bound its configuration sets.

Validation uses `pokevq.storage.FAST_FAIL` clients: at most `max_attempts` attempts, each
waiting at most `connect_timeout` to connect, so a dead endpoint is answered within
connect_timeout x max_attempts (15 s promised) plus botocore's short backoff. Measured here: an
endpoint where nothing listens (every attempt is refused at once, then retried with backoff).
An endpoint that drops packets waits the connect timeout per attempt; this sandbox cannot make
one, so that case is the configuration's bound (asserted in tests/integration/test_validate.py).

    python -m benchmarks.fail_fast [--out benchmarks/FAIL_FAST.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

PROMISE_SECONDS = 15.0


def _seconds(endpoint: str, work: Path) -> tuple[float, str]:
    from pokevq.config import TrainConfig
    from pokevq.errors import PokevqError
    from pokevq.run.validate import validate_setup

    config = TrainConfig(use_s3=True, s3_bucket="pokevq-bench", s3_endpoint_url=endpoint, no_fallback=True,
                         output_dir=str(work))
    started = time.monotonic()
    try:
        validate_setup(config.storage, config.run.experiment_name)
        outcome = "validated (not down?)"
    except PokevqError as exc:
        outcome = str(exc).splitlines()[0][:90]
    return time.monotonic() - started, outcome


def measure(work: Path) -> dict[str, Any]:
    import os

    from pokevq.storage import FAST_FAIL

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # keys exist; only the endpoint is dead
        os.environ.setdefault(name, "pokevq-bench")
    from pokevq.storage.local_server import free_port

    bound = FAST_FAIL["connect_timeout"] * (FAST_FAIL["max_attempts"] + 1)  # botocore: first try + retries
    refused = _seconds(f"http://127.0.0.1:{free_port()}", work)
    return {"bound": bound, "refused": refused}


def markdown(r: dict[str, Any]) -> str:
    rows = [f"| {name} | {r[name][0]:.1f} | {'within' if r[name][0] <= PROMISE_SECONDS else 'OVER'} the 15 s "
            f"promise | {r[name][1]} |" for name in ("refused",)]
    return "\n".join([
        "# A dead S3 endpoint: seconds to the run's one-line error",
        "",
        f"`python -m benchmarks.fail_fast`: validation's clients allow {r['bound']:.0f} s by configuration "
        "(connect timeout x attempts).",
        "",
        "| endpoint | seconds | | error |",
        "|---|---:|---|---|",
        *rows,
        "",
    ])


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("FAIL_FAST.md")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pokevq-bench-fail-") as directory:
        result = measure(Path(directory))
    Path(args.out).write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
