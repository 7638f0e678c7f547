"""`pokevq/train` as a deployment on a real Prefect server with a process worker.

Brought up the way a user does it (`pokevq stack up`), with the S3 side pointed at moto's
server behind a fault-injecting proxy; torn down with `pokevq stack down`, by PID.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from deployments.stack import api_request
from pokevq.storage.local_server import LocalS3Server, free_port
from tests.helpers.s3_proxy import FaultProxy

pytestmark = pytest.mark.deployment

BUCKET = "pokevq-deploy"
TINY = ["-p", "image_size=72x80", "-p", "hidden_channels=8", "-p", "embedding_dim=4", "-p", "codebook_size=16",
        "-p", "num_workers=0", "-p", "batch_size=4"]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class Stack:
    def __init__(self, env: dict[str, str], api_url: str, ui_url: str, proxy: FaultProxy, s3) -> None:
        self.env, self.api_url, self.ui_url, self.proxy, self.s3 = env, api_url, ui_url, proxy, s3

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

    def wait(self, flow_run_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/flow_runs/{flow_run_id}")
            if run["state_type"] in TERMINAL:
                return run
            time.sleep(1)
        raise AssertionError(f"flow run {flow_run_id} did not finish within {timeout}s")

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
    moto = LocalS3Server(log_path=home / "moto.log").start()
    proxy = FaultProxy(moto.endpoint_url).start()
    s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(synth_frames.rglob("*.png")):
        s3.put_object(Bucket=BUCKET, Key=f"pokemon_frames/{path.relative_to(synth_frames).as_posix()}",
                      Body=path.read_bytes())
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") or k == "PREFECT_SERVER_ANALYTICS_ENABLED"
    }
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        S3_BUCKET_NAME=BUCKET,
        AWS_ENDPOINT_URL=proxy.url,
        AWS_ACCESS_KEY_ID="deploy-test-key-id",
        AWS_SECRET_ACCESS_KEY="deploy-test-secret-value",
    )
    up = subprocess.run([sys.executable, "-m", "pokevq", "stack", "up", "--port", str(port), "--pool", "pokevq-test"],
                        env=env, capture_output=True, text=True, timeout=400)
    if up.returncode != 0:  # stack up stopped what it started; stop what this fixture started
        proxy.stop()
        moto.stop()
        pytest.fail(f"stack up failed:\n{up.stdout}\n{up.stderr}")
    api_url = f"http://127.0.0.1:{port}/api"
    assert f"export PREFECT_API_URL={api_url}" in up.stdout
    state = json.loads((home / "pokevq-stack.json").read_text())
    env["PREFECT_API_URL"] = api_url
    yield Stack(env, api_url, f"http://127.0.0.1:{port}", proxy, s3)

    down = subprocess.run([sys.executable, "-m", "pokevq", "stack", "down"], env=env, capture_output=True,
                          text=True, timeout=120)
    again = subprocess.run([sys.executable, "-m", "pokevq", "stack", "down"], env=env, capture_output=True,
                           text=True, timeout=120)
    proxy.stop()
    moto.stop()
    assert down.returncode == 0 and again.returncode == 0, down.stderr + again.stderr
    for pid in state["pids"].values():  # stopped by PID, every one of them
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "No pokevq stack is running" in again.stdout


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


def test_deployment_run_trains_and_persists_results_in_s3(stack):
    run_id = stack.run_deployment("-p", "num_epochs=2", "-p", "experiment_name=deploy-e2e", *TINY)
    run = stack.wait(run_id)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert {"checkpoints/deploy-e2e/checkpoint_latest.pt", "checkpoints/deploy-e2e/checkpoint_best.pt",
            "reports/deploy-e2e/report.md", "logs/deploy-e2e/training_latest.log"} <= set(stack.keys(""))
    results = stack.keys("prefect-results/")
    assert any(f"{run_id}-train_epoch-2" in key for key in results), results
    for key in results:  # task results are small and hold no secret
        body = stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert len(body) < 64_000
        assert b"deploy-test-secret-value" not in body
    artifacts = stack.api("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    kinds = {artifact["type"] for artifact in artifacts}
    assert {"markdown", "table", "progress"} <= kinds, kinds
    links = [a["data"] for a in artifacts if a["type"] == "markdown" and str(a["data"]).startswith("[")]
    assert any("checkpoint_best" in link and f"{stack.proxy.url}/{BUCKET}/checkpoints/deploy-e2e/" in link
               for link in links), links
    progress = [a for a in artifacts if a["type"] == "progress"]
    assert progress[0]["data"] == 100.0
    names = set(stack.task_runs(run_id))
    assert {"train_epoch[1]", "train_epoch[2]", "upload_checkpoint[1]", "upload_tensorboard[2]"} <= names


def test_retry_reruns_only_the_failed_upload_and_what_follows(stack):
    stack.proxy.deny_put = re.compile(r"checkpoint_epoch_2\.pt")
    try:
        run_id = stack.run_deployment("-p", "num_epochs=3", *TINY)  # experiment name derived from the run
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


def test_flow_run_page_shows_run_tasks_and_artifacts_in_a_browser(stack):
    from playwright.sync_api import sync_playwright

    runs = stack.api("POST", "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                                                    "limit": 1, "sort": "START_TIME_DESC"})
    assert runs, "an earlier test leaves a completed run"
    run = runs[0]
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
