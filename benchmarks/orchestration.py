"""Orchestration overhead of the `pokevq/train` deployment on a real Prefect server.

Brings up the stack (local S3 endpoint, server, process worker), runs the deployment with a
tiny model, and reads from the API:
  - time from `prefect deployment run` to the first training step (train_epoch[1] starting),
  - per-epoch orchestration overhead: the gap between consecutive train_epoch task runs
    plus each train_epoch run's time outside the training loop.

    python -m benchmarks.orchestration [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from deployments.stack import api_request
from pokevq.storage.local_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="pokevq-bench-prefect-")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "S3_"))}
    env.update(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    pokevq = [sys.executable, "-m", "pokevq"]
    up = subprocess.run([*pokevq, "stack", "up", "--port", str(port)], env=env, capture_output=True, text=True)
    if up.returncode:
        sys.exit(f"stack up failed:\n{up.stdout}\n{up.stderr}")
    api = f"http://127.0.0.1:{port}/api"
    env["PREFECT_API_URL"] = api
    try:
        prefect = str(Path(sys.executable).with_name("prefect"))
        params = ["-p", f"num_epochs={args.epochs}", "-p", "image_size=72x80", "-p", "hidden_channels=8",
                  "-p", "embedding_dim=4", "-p", "codebook_size=16", "-p", "num_workers=0", "-p", "batch_size=8"]
        started = time.time()
        out = subprocess.run([prefect, "deployment", "run", "pokevq/train", *params], env=env, capture_output=True,
                             text=True, check=True).stdout
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
        while api_request(api, "GET", f"/flow_runs/{run_id}")["state_type"] not in ("COMPLETED", "FAILED", "CRASHED"):
            time.sleep(1)
        tasks = api_request(api, "POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200})
        epochs = sorted((t for t in tasks if t["name"].startswith("train_epoch[")), key=lambda t: t["start_time"])
        first_step = _ts(epochs[0]["start_time"]) - started
        gaps = [_ts(b["start_time"]) - _ts(a["end_time"]) for a, b in zip(epochs, epochs[1:])]
        durations = [t["total_run_time"] for t in epochs]
        result = {
            "deployment_run_to_first_training_step_s": round(first_step, 2),
            "mean_gap_between_epochs_s": round(sum(gaps) / len(gaps), 3) if gaps else None,
            "mean_train_epoch_task_s": round(sum(durations) / len(durations), 3),
            "epochs": args.epochs,
        }
        print(json.dumps(result, indent=2))
    finally:
        subprocess.run([*pokevq, "stack", "down"], env=env, capture_output=True, text=True)


if __name__ == "__main__":
    main()
