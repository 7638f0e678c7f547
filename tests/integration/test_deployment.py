"""`pokevq/train` as a deployment on a real Prefect server with a process worker.

Brought up the way a user does it on a fresh machine: `pokevq stack up` with no AWS settings at all,
so the stack starts its own local S3 endpoint and seeds bucket `pokevq` with synthetic frames. A
fault-injecting proxy in front of that endpoint breaks one upload for the retry test. Torn down with
`pokevq stack down`, by PID.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import boto3
import pandas as pd
import pytest

from deployments.stack import api_request
from pokevq.storage.local_server import free_port
from tests.helpers.s3_proxy import FaultProxy

pytestmark = pytest.mark.deployment

BUCKET = "pokevq"  # what `stack up` creates and seeds when the environment has no S3 settings
SMALL = "small_frames"  # 24 frames uploaded by the fixture: the tests' runs train on these
LOCAL_SECRET = "pokevq-local-secret"
ZOMBIE_SECONDS = 50  # the automation's window for this stack (POKEVQ_ZOMBIE_SECONDS; 90 by default)
TINY = ["-p", "image_size=72x80", "-p", "hidden_channels=8", "-p", "embedding_dim=4", "-p", "codebook_size=16",
        "-p", "num_workers=0", "-p", "batch_size=4"]
SMALL_TINY = ["-p", f"frames_dir={SMALL}", *TINY]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class Stack:
    def __init__(self, env: dict[str, str], api_url: str, ui_url: str, endpoint: str, proxy: FaultProxy, s3,
                 up: subprocess.CompletedProcess, state: dict) -> None:
        self.env, self.api_url, self.ui_url, self.endpoint = env, api_url, ui_url, endpoint
        self.proxy, self.s3, self.up, self.state = proxy, s3, up, state

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        prefect = str(Path(sys.executable).with_name("prefect"))
        done = subprocess.run([prefect, *args], env=self.env, capture_output=True, text=True, timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def api(self, method: str, path: str, body=None):
        return api_request(self.api_url, method, path, body)

    def run_deployment(self, *params: str) -> str:
        done = self.cli("deployment", "run", "pokevq/train", *params)
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout)
        assert match, done.stdout
        return match.group(1)

    def wait(self, flow_run_id: str, timeout: float = 300, until=TERMINAL) -> dict:
        """Poll until the run is in one of `until` (a hang guard, not a speed limit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/flow_runs/{flow_run_id}")
            if run["state_type"] in until:
                return run
            time.sleep(0.5)
        raise AssertionError(f"flow run {flow_run_id} did not reach {sorted(until)} within {timeout}s")

    def task_runs(self, flow_run_id: str) -> dict[str, dict]:
        """The latest task run of each name in a flow run (a retry adds new ones)."""
        runs = self.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200,
                                                      "sort": "EXPECTED_START_TIME_ASC"})
        latest: dict[str, dict] = {}
        for run in sorted(runs, key=lambda r: r["created"]):
            latest[run["name"]] = run
        return latest

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, synth_frames):
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    # A fresh machine: no S3 bucket, endpoint or keys in the environment (and no ~/.aws: conftest points
    # the shared files nowhere), no Prefect settings but a home of its own.
    unset = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
             "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "S3_BUCKET_NAME")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k not in unset}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="1",  # the worker picks a scheduled run up within a second
        POKEVQ_ZOMBIE_SECONDS=str(ZOMBIE_SECONDS),
    )
    up = subprocess.run([sys.executable, "-m", "pokevq", "stack", "up", "--port", str(port), "--pool", "pokevq-test"],
                        env=env, capture_output=True, text=True, timeout=400)
    state_path = home / "pokevq-stack.json"
    if up.returncode != 0:  # stack up stopped what it started
        pytest.fail(f"stack up failed:\n{up.stdout}\n{up.stderr}")
    api_url = f"http://127.0.0.1:{port}/api"
    assert f"export PREFECT_API_URL={api_url}" in up.stdout
    state = json.loads(state_path.read_text())
    endpoint = state["endpoint_url"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="pokevq-local",
                      aws_secret_access_key=LOCAL_SECRET)
    for path in sorted(synth_frames.rglob("*.png")):
        s3.put_object(Bucket=BUCKET, Key=f"{SMALL}/{path.relative_to(synth_frames).as_posix()}",
                      Body=path.read_bytes())
    proxy = FaultProxy(endpoint).start()
    env["PREFECT_API_URL"] = api_url
    yield Stack(env, api_url, f"http://127.0.0.1:{port}", endpoint, proxy, s3, up, state)

    proxy.stop()
    down = subprocess.run([sys.executable, "-m", "pokevq", "stack", "down"], env=env, capture_output=True,
                          text=True, timeout=120)
    again = subprocess.run([sys.executable, "-m", "pokevq", "stack", "down"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert down.returncode == 0 and again.returncode == 0, down.stderr + again.stderr
    assert set(state["pids"]) >= {"server", "s3", "worker"}
    for pid in state["pids"].values():  # stopped by PID, every one of them, the local S3 included
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "No pokevq stack is running" in again.stdout


@pytest.fixture(scope="module")
def e2e_run(stack) -> str:
    """A completed 2-epoch deployment run (experiment deploy-e2e): its flow run id."""
    run_id = stack.run_deployment("-p", "num_epochs=2", "-p", "experiment_name=deploy-e2e", *SMALL_TINY)
    run = stack.wait(run_id)
    assert run["state_type"] == "COMPLETED", run["state"]
    return run_id


def test_stack_up_without_aws_settings_serves_seeded_frames_and_a_run_completes(stack):
    assert f"S3 bucket s3://{BUCKET} at {stack.endpoint}" in stack.up.stdout
    frames = [key for key in stack.keys("pokemon_frames/") if key.endswith(".png")]
    assert len(frames) == 240  # 2 games x 3 episodes x 40

    run_id = stack.run_deployment("-p", "num_epochs=1", "-p", "experiment_name=seeded", *TINY)  # the seeded frames
    run = stack.wait(run_id)

    assert run["state_type"] == "COMPLETED", run["state"]
    assert {"checkpoints/seeded/checkpoint_latest.pt", "reports/seeded/report.md"} <= set(stack.keys(""))
    body = stack.s3.get_object(Bucket=BUCKET, Key="manifests/seeded/manifest.parquet")["Body"].read()
    assert len(pd.read_parquet(io.BytesIO(body))) == 240  # every seeded frame indexed


def test_deployment_has_the_nightly_schedule_and_typed_parameters(stack):
    inspected = stack.cli("deployment", "inspect", "pokevq/train").stdout
    assert "'cron': '0 3 * * *'" in inspected
    assert "'work_pool_name': 'pokevq-test'" in inspected
    deployment = stack.api("GET", "/deployments/name/pokevq/train")
    schema = deployment["parameter_openapi_schema"]["properties"]
    assert schema["num_epochs"]["type"] == "integer" and schema["num_epochs"]["default"] == 50
    assert schema["learning_rate"]["type"] == "number"
    assert all(schema[name].get("description") for name in ("num_epochs", "s3_bucket", "image_size", "warm_start"))
    schedules = deployment["schedules"]
    assert schedules and schedules[0]["parameters"] == {"nightly": True, "use_s3": True, "no_fallback": True}
    tokenize = stack.api("GET", "/deployments/name/pokevq-tokenize/tokenize")
    assert tokenize["entrypoint"] == "flows/tokenize_flow.py:pokevq_tokenize" and not tokenize["schedules"]
    assert "checkpoint" in tokenize["parameter_openapi_schema"]["required"]

    deployment_runs = {"deployments": {"id": {"any_": [deployment["id"]]}}}
    runs_before = stack.api("POST", "/flow_runs/count", deployment_runs)
    refused = stack.cli("deployment", "run", "pokevq/train", "-p", "num_epochs=many", check=False)
    assert refused.returncode != 0
    assert "num_epochs" in refused.stdout + refused.stderr
    assert stack.api("POST", "/flow_runs/count", deployment_runs) == runs_before  # refused before any run exists


def test_deployment_run_trains_and_persists_results_in_s3(stack, e2e_run):
    run_id = e2e_run
    assert {"checkpoints/deploy-e2e/checkpoint_latest.pt", "checkpoints/deploy-e2e/checkpoint_best.pt",
            "reports/deploy-e2e/report.md", "logs/deploy-e2e/training_latest.log"} <= set(stack.keys(""))
    results = stack.keys("prefect-results/")
    assert any(f"{run_id}-train_epoch-2" in key for key in results), results
    for key in results:  # task results are small and hold no secret
        body = stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert len(body) < 64_000
        assert LOCAL_SECRET.encode() not in body
    artifacts = stack.api("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    kinds = {artifact["type"] for artifact in artifacts}
    assert {"markdown", "table", "progress"} <= kinds, kinds
    links = [a["data"] for a in artifacts if a["type"] == "markdown" and str(a["data"]).startswith("[")]
    assert any("checkpoint_best" in link and f"{stack.endpoint}/{BUCKET}/checkpoints/deploy-e2e/" in link
               for link in links), links
    progress = [a for a in artifacts if a["type"] == "progress"]
    assert progress[0]["data"] == 100.0
    names = set(stack.task_runs(run_id))
    assert {"train_epoch[1]", "train_epoch[2]", "upload_checkpoint[1]", "upload_tensorboard[2]"} <= names


def test_retry_reruns_only_the_failed_upload_and_what_follows(stack):
    stack.proxy.deny_put = re.compile(r"checkpoint_epoch_2\.pt")
    try:
        # Through the proxy (a run parameter overrides the block's endpoint); the name is derived from the run.
        run_id = stack.run_deployment("-p", "num_epochs=3", "-p", f"s3_endpoint_url={stack.proxy.url}", *SMALL_TINY)
        failed = stack.wait(run_id)
    finally:
        stack.proxy.deny_put = None
    assert failed["state_type"] == "FAILED"
    assert stack.proxy.denied, "the fault was never hit"
    before = stack.task_runs(run_id)
    assert before["upload_checkpoint[2]"]["state_type"] == "FAILED"
    experiment = next(k.split("/")[1] for k in stack.keys("checkpoints/") if "checkpoint_epoch_1.pt" in k
                      and k.split("/")[1].startswith("pokevq-"))

    # What the UI's Retry button does: put the failed run back to Scheduled/AwaitingRetry.
    stack.api("POST", f"/flow_runs/{run_id}/set_state",
              {"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"},
               "force": True})
    retried = stack.wait(run_id)
    assert retried["state_type"] == "COMPLETED", retried["state"]
    assert retried["run_count"] >= 2

    after = stack.task_runs(run_id)
    for name in ("validate", "index_manifest", "warm_cache", "train_epoch[1]", "train_epoch[2]", "train_epoch[3]",
                 "upload_checkpoint[1]"):
        assert after[name]["state_name"] == "Cached", (name, after[name]["state_name"])
    assert after["upload_checkpoint[2]"]["state_name"] == "Completed"
    keys = stack.keys(f"checkpoints/{experiment}/")
    assert [k.rsplit("/", 1)[1] for k in keys] == [
        "checkpoint_best.pt", "checkpoint_epoch_1.pt", "checkpoint_epoch_2.pt", "checkpoint_epoch_3.pt",
        "checkpoint_latest.pt",
    ]
    latest = stack.s3.get_object(Bucket=BUCKET, Key=f"checkpoints/{experiment}/checkpoint_latest.pt")["Body"].read()
    third = stack.s3.get_object(Bucket=BUCKET, Key=f"checkpoints/{experiment}/checkpoint_epoch_3.pt")["Body"].read()
    assert latest == third


def test_flow_run_page_shows_run_tasks_and_artifacts_in_a_browser(stack, e2e_run):
    from playwright.sync_api import sync_playwright

    run = stack.api("GET", f"/flow_runs/{e2e_run}")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{stack.ui_url}/runs/flow-run/{run['id']}", wait_until="networkidle")
        page.get_by_text(run["name"]).first.wait_for(timeout=30_000)
        page.get_by_text("Completed").first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "flow-run.png"), full_page=True)
        page.get_by_text("Task Runs", exact=True).first.click()
        page.get_by_text("train_epoch[1]").first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "flow-run-task-runs.png"), full_page=True)
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text(re.compile("report")).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "flow-run-artifacts.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "flow-run-artifacts.png").stat().st_size > 10_000


def _heartbeats(stack: Stack, flow_run_id: str) -> list[datetime]:
    """When the server received the flow run's heartbeat events, oldest first."""
    page = stack.api("POST", "/events/filter", {
        "filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                   "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
                   "occurred": {"since": "2000-01-01T00:00:00Z"}, "order": "ASC"},
        "limit": 50,
    })
    return sorted(datetime.fromisoformat(event["occurred"]) for event in page["events"])


def test_a_run_whose_process_and_worker_fall_silent_is_marked_crashed(stack):
    """The machine dies: the flow-run process is killed and its worker cannot report it (stopped).
    Only the zombie automation can then end the run: Crashed, once the window passes without a heartbeat."""
    run_id = stack.run_deployment("-p", "num_epochs=10000", "-p", "experiment_name=zombie", *SMALL_TINY)
    stack.wait(run_id, until={"RUNNING", *TERMINAL})
    deadline = time.monotonic() + 120  # hang guard
    while not _heartbeats(stack, run_id):
        assert time.monotonic() < deadline, "the run never sent a heartbeat"
        time.sleep(0.5)
    run = stack.api("GET", f"/flow_runs/{run_id}")
    assert run["state_type"] == "RUNNING", run["state"]
    pid = int(str(run["infrastructure_pid"]).rsplit(":", 1)[-1])
    worker = stack.state["pids"]["worker"]
    os.kill(worker, signal.SIGSTOP)  # the worker can no longer see or report anything
    try:
        os.kill(pid, signal.SIGKILL)
        crashed = stack.wait(run_id, timeout=ZOMBIE_SECONDS * 4)
    finally:
        os.kill(worker, signal.SIGCONT)

    assert crashed["state_type"] == "CRASHED", crashed["state"]
    assert crashed["state"]["message"].startswith(f"No heartbeat for {ZOMBIE_SECONDS} seconds")  # the automation
    last_beat = _heartbeats(stack, run_id)[-1]
    crashed_at = datetime.fromisoformat(crashed["state"]["timestamp"])
    assert (crashed_at - last_beat).total_seconds() >= ZOMBIE_SECONDS  # the window, not earlier
