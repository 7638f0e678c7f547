"""Per-task overhead of Prefect on its ephemeral API: a flow of N tiny task runs against N direct calls.

Runs in its own process with a temporary PREFECT_HOME; prints one JSON line. The numbers with a
real server, worker and deployment come from benchmarks/orchestration.py.

    python -m benchmarks.orchestration_overhead [--tasks 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time


def work(i: int) -> int:
    total = 0
    for j in range(2000):
        total += (i * j) % 7
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="pokevq-bench-prefect-")
    os.environ.update(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_LOGGING_LEVEL="WARNING")
    os.environ.pop("PREFECT_API_URL", None)
    try:
        from prefect import flow, task

        tracked = task(name="bench_task", task_run_name="bench_task[{i}]", persist_result=False)(work)

        @flow(name="bench-overhead", persist_result=False)
        def many(n: int) -> float:
            tracked(-1)  # the first task run pays one-off costs
            started = time.perf_counter()
            for i in range(n):
                tracked(i)
            return time.perf_counter() - started

        started = time.perf_counter()
        many(1)  # starts the ephemeral API: not part of the per-task figure
        startup = time.perf_counter() - started
        orchestrated = many(args.tasks)
        direct_started = time.perf_counter()
        for i in range(args.tasks):
            work(i)
        direct = time.perf_counter() - direct_started
        print(json.dumps({
            "tasks": args.tasks,
            "per_task_overhead_ms": round((orchestrated - direct) / args.tasks * 1000, 2),
            "orchestrated_s": round(orchestrated, 3),
            "direct_s": round(direct, 4),
            "ephemeral_api_startup_s": round(startup, 2),
        }))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
