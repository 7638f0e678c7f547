"""What a user sees of a run in Prefect: the data flow between steps, keyed artifacts, keys kept out of the process."""

from __future__ import annotations

import asyncio
import os
import urllib.request
from pathlib import Path

import pytest

from flows import train
from pokevq import TrainConfig
from pokevq.data.upload_frames import upload_directory
from tests.helpers.runs import s3_train_config

pytestmark = pytest.mark.e2e


def _config(tmp_path: Path, bucket: str, endpoint: str | None, **overrides) -> TrainConfig:
    return s3_train_config(tmp_path, bucket, endpoint, **{"experiment_name": "graph", **overrides})


async def _runs_and_artifacts(flow_run_id) -> tuple[dict, list]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {run.name: run for run in task_runs}, artifacts


async def _latest_flow_run_id():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        runs = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
    return runs[0].id


def _inputs(run) -> set[str]:
    """Names of the upstream task runs whose results this task run took as inputs."""
    return {str(ref.id) for refs in run.task_inputs.values() for ref in refs if getattr(ref, "id", None)}


def test_run_graph_shows_the_data_flow_and_keyed_artifacts(prefect_harness, tmp_path, moto_endpoint, bucket,
                                                           synth_frames):
    config = _config(tmp_path, bucket, moto_endpoint)
    upload_directory(synth_frames, config.storage, threads=4)
    train(config)
    runs, artifacts = asyncio.run(_runs_and_artifacts(asyncio.run(_latest_flow_run_id())))

    def fed_by(step: str, *upstream: str) -> None:
        ids = {str(runs[name].id) for name in upstream}
        assert ids <= _inputs(runs[step]), f"{step} does not take the result of {upstream}"

    fed_by("index_manifest", "validate")
    fed_by("warm_cache", "index_manifest")
    fed_by("prepare_training", "index_manifest", "warm_cache")
    fed_by("train_epoch[1]", "prepare_training")
    fed_by("train_epoch[2]", "train_epoch[1]")
    fed_by("upload_checkpoint[2]", "train_epoch[2]")
    fed_by("upload_tensorboard[1]", "train_epoch[1]")
    fed_by("report", "index_manifest", "warm_cache", "upload_checkpoint[1]", "upload_checkpoint[2]")

    assert all(artifact.description for artifact in artifacts), [a.type for a in artifacts if not a.description]
    keys = {artifact.key for artifact in artifacts if artifact.key}
    assert {"graph-report", "graph-metrics", "graph-reconstructions", "pokevq-runs"} <= keys, keys
    assert [a.type for a in artifacts].count("progress") == 1
    image = next(a for a in artifacts if a.type == "image")
    with urllib.request.urlopen(image.data, timeout=10) as response:  # the presigned URL, no credentials
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_retried_run_moves_its_one_progress_bar(prefect_harness):
    from prefect import flow

    from tasks.artifacts import advance_progress, progress_artifact

    @flow
    def twice() -> tuple[str, str]:
        first = progress_artifact("exp", 0, 4)  # the first attempt of a run
        advance_progress(first, "exp", 2, 4)
        second = progress_artifact("exp", 2, 4)  # the retry finds the bar instead of adding one
        return str(first), str(second)

    first, second = twice()
    assert first == second
    _, artifacts = asyncio.run(_runs_and_artifacts(asyncio.run(_latest_flow_run_id())))
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 1 and progress[0].data == 50.0


def test_block_keys_reach_the_run_but_never_the_process_environment(prefect_harness, tmp_path, moto_endpoint,
                                                                    bucket, synth_frames, monkeypatch):
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    upload_directory(synth_frames, _config(tmp_path, bucket, moto_endpoint).storage, threads=4)
    credentials = AwsCredentials(aws_access_key_id="block-key-id", aws_secret_access_key="block-secret-value",
                                 region_name="us-east-1",
                                 aws_client_parameters=AwsClientParameters(endpoint_url=moto_endpoint))
    S3Bucket(bucket_name=bucket, credentials=credentials).save("graph-test-bucket", overwrite=True)
    monkeypatch.setenv("POKEVQ_S3_BUCKET_BLOCK", "graph-test-bucket")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # only the block can supply keys now
        monkeypatch.delenv(name)
    summary = train(_config(tmp_path, "", None, s3_bucket=None, num_epochs=1, experiment_name="from-block"))

    assert summary["epochs_trained"] == 1 and not summary["fallback"]
    assert summary["artifacts"]["report"] == f"s3://{bucket}/reports/from-block/report.md"
    assert "AWS_ACCESS_KEY_ID" not in os.environ and "AWS_SECRET_ACCESS_KEY" not in os.environ
    assert "block-secret-value" not in repr(summary)
