"""The fallback promise (docs/storage.md) for every cause it names: `pokevq train` without `--no-fallback`, when S3
cannot be used, warns loudly (on the console and in the run's log: the flow run's log in Prefect, which the UI
shows; at WARNING, naming the cause) and trains on local storage under `--output-dir`.

"Unreachable endpoint" and "missing bucket" are covered in test_validate.py and test_e2e.py; these are the
other causes: no credentials, access denied, an empty frames prefix. The three `pokevq train` runs share one
interpreter (`pokevq.cli.main.main` called once per cause, as the `pokevq` command does), so the imports
are paid once; each run's console is what that process wrote to stdout and stderr between separators.
"""

from __future__ import annotations

import logging
import os
import re
import uuid

import boto3
import pytest

from tests.helpers.cli_cases import run_cli_cases
from tests.helpers.frames import upload_tree
from tests.helpers.runs import TINY_FLAGS, list_keys
from tests.helpers.s3_proxy import FaultProxy

pytestmark = pytest.mark.e2e

# The loud warning docs/storage.md promises (pokevq/run/validate.py and the validate task say it), then the cause.
LOUD = re.compile(r"FALL(?:ING|S) BACK TO LOCAL STORAGE")

# cause -> (the start of the validation's message naming it, per the troubleshooting table in docs/storage.md)
CAUSES = {
    "no-credentials": "AWS credentials not found",
    "access-denied": "Access denied to S3 bucket {bucket}",
    "empty-prefix": "No frames found under s3://{bucket}/",
}

def _loud(message: str, reason: str) -> bool:
    """`message` is the fallback warning, naming `reason` after it."""
    found = LOUD.search(message)
    return found is not None and reason in message[found.end():]


def _flow_run_logs(bucket: str) -> list:
    """The logs Prefect's API holds for the one flow run that trained on `bucket`, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    with get_client(sync_client=True) as client:
        runs = [run for run in client.read_flow_runs() if run.parameters.get("s3_bucket") == bucket]
        assert len(runs) == 1, [run.parameters.get("s3_bucket") for run in runs]
        return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[0].id])),
                                sort=LogSort.TIMESTAMP_ASC)


@pytest.fixture(scope="module")
def fallback_runs(prefect_harness, moto_endpoint, synth_frames, tmp_path_factory):
    """One `pokevq train` per cause, all allowed to fall back; per cause: bucket, output dir, console, exit code."""
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("fallback")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    # --frames-dir is the local folder of frames, and the same string is the prefix read in S3.
    frames_dir = str(synth_frames)
    prefix = frames_dir.strip("/") + "/"
    buckets = {cause: f"pokevq-fallback-{uuid.uuid4().hex[:10]}" for cause in CAUSES}
    for cause, name in buckets.items():
        s3.create_bucket(Bucket=name)
        if cause != "empty-prefix":  # a bucket with the frames: the cause under test is the only problem
            upload_tree(s3, name, synth_frames, prefix)
    proxy = FaultProxy(moto_endpoint).start()
    denied = re.escape(buckets["access-denied"])
    proxy.add_fault("deny", rf"^[A-Z]+ /{denied}([/?]|$)")  # every request on that bucket: 403 AccessDenied
    endpoints = {"no-credentials": moto_endpoint, "access-denied": proxy.url, "empty-prefix": moto_endpoint}
    cases = {}
    for cause in CAUSES:
        argv = ["train", "--use-s3", "--s3-bucket", buckets[cause], "--s3-endpoint-url", endpoints[cause],
                "--frames-dir", frames_dir, "--output-dir", str(root / cause), "--experiment-name", cause,
                "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--learning-rate", "0.001",
                "--cache-dir", str(root / "cache" / cause), *TINY_FLAGS]
        drop = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] if cause == "no-credentials" else []
        cases[cause] = (argv, drop)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "4000"}  # no console line wrapped
    try:  # the three runs in one interpreter; the console of each is what it wrote to stdout and stderr
        consoles = run_cli_cases(cases, env, root, timeout=300)
    finally:
        proxy.stop()
    denials = proxy.injected_count("deny")
    return {cause: dict(bucket=buckets[cause], out=root / cause, console=consoles[cause][1], rc=consoles[cause][0],
                        logs=_flow_run_logs(buckets[cause]), denials=denials) for cause in CAUSES}


@pytest.mark.parametrize("cause", list(CAUSES))
def test_fallback_warns_on_the_console_and_in_the_log_and_trains_locally(fallback_runs, cause, s3_client):
    run = fallback_runs[cause]
    bucket, out, console = run["bucket"], run["out"], run["console"]
    reason = CAUSES[cause].format(bucket=bucket)
    assert run["rc"] == 0, console[-3000:]
    if cause == "access-denied":
        assert run["denials"] > 0  # the proxy answered 403 AccessDenied: that is what failed

    # In the run's log, as the orchestrator keeps it (the flow run's logs in Prefect's API and UI): at WARNING,
    # naming the cause.
    assert any(entry.level == logging.WARNING and _loud(entry.message, reason) for entry in run["logs"]), [
        (entry.level, entry.message) for entry in run["logs"]][:20]

    # On the console of `pokevq train`: the loud warning at WARNING, naming the cause, and again in the summary.
    lines = console.splitlines()
    assert any(" WARNING " in line and _loud(line, reason) for line in lines), console[-3000:]
    assert "WARNING: S3 set-up failed and this run used LOCAL storage (see the report)." in lines

    # The run completed on local storage: report, checkpoints and manifest under --output-dir.
    # The run's own training log says so too.
    assert reason in (out / "logs" / cause / "training_latest.log").read_text(encoding="utf-8")
    report = (out / "reports" / cause / "report.md").read_text(encoding="utf-8")
    assert "fell back to local storage" in report
    assert reason in report
    for name in ("checkpoint_epoch_1.pt", "checkpoint_latest.pt", "checkpoint_best.pt"):
        assert (out / "checkpoints" / cause / name).is_file(), name
    assert (out / "manifests" / cause / "manifest.parquet").is_file()
    # ... and nothing of the run's layout in the bucket (only the frames the bucket held before).
    for folder in ("checkpoints", "logs", "manifests", "reports", "tensorboard"):
        assert list_keys(s3_client, bucket, f"{folder}/") == [], folder
