"""Mid-epoch checkpoints and budgets through the real flow: a run killed with SIGKILL inside an epoch, and a
run that a step budget ends, both resume where they stopped: across the runs, every training frame of the
epoch is trained exactly once (counted from the frame log, `POKEVQ_FRAME_LOG`)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from pokevq.config import TrainConfig
from pokevq.train.checkpoint import load_checkpoint
from tests.helpers.frames import upload_tree
from tests.helpers.runs import TINY, ended, slow_streaming_args


@pytest.fixture
def proxy(fault_proxy):
    return fault_proxy


@pytest.fixture
def frames(episode_frames):
    return episode_frames


def _start_run(args: list[str], env: dict[str, str], output: Path) -> subprocess.Popen:
    """`pokevq train` in its own process (killable like a worker's flow run), its console to `output`."""
    with open(output, "wb") as handle:
        return subprocess.Popen([sys.executable, "-m", "pokevq", "train", *args], env={**os.environ, **env},
                                stdout=handle, stderr=subprocess.STDOUT, cwd=output.parent)


def _wait_for(condition, process: subprocess.Popen, output: Path, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, output.read_text()[-3000:]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _train_keys(s3, bucket: str, experiment: str) -> list[str]:
    body = s3.get_object(Bucket=bucket, Key=f"manifests/{experiment}/manifest.parquet")["Body"].read()
    manifest = pd.read_parquet(io.BytesIO(body))
    return manifest.loc[manifest["split"] == "train", "key"].tolist()


def _frame_log(path: Path, *, epoch: int, up_to_step: int | None = None) -> list[str]:
    keys = []
    for line in path.read_text().splitlines():
        e, step, key = line.split(" ", 2)
        if int(e) == epoch and (up_to_step is None or int(step) <= up_to_step):
            keys.append(key)
    return keys


def _latest_step(s3, bucket: str, experiment: str) -> int:
    head = s3.head_object(Bucket=bucket, Key=f"checkpoints/{experiment}/checkpoint_latest.pt")
    return int(head["Metadata"]["global-step"])


def test_run_killed_mid_epoch_resumes_at_its_position_with_every_frame_once(
    proxy, prefect_harness, tmp_path, bucket, s3_client, frames, monkeypatch
):
    from prefect.settings import PREFECT_API_URL

    from flows.pokevq_flow import train

    # Shards come through a slow link: the epoch takes seconds, time to kill it in the middle.
    args = slow_streaming_args(proxy, s3_client, bucket, frames, "mid", "--checkpoint-every-steps", "2",
                               "--cache-dir", str(tmp_path / "cache1"), "--output-dir", str(tmp_path / "out1"))
    first_log = tmp_path / "frames1.log"
    env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "POKEVQ_FRAME_LOG": str(first_log)}
    prefix = "checkpoints/mid/"

    def published_step_4() -> bool:
        listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix + "checkpoint_step_").get("Contents", [])
        return any(int(re.search(r"step_(\d+)", item["Key"]).group(1)) >= 4 for item in listed)

    process = _start_run(args, env, tmp_path / "run1.log")
    try:
        _wait_for(published_step_4, process, tmp_path / "run1.log", "no mid-epoch checkpoint was published")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    listed = [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert prefix + "checkpoint_epoch_1.pt" not in listed, "the epoch finished before the kill"
    step = _latest_step(s3_client, bucket, "mid")
    train_keys = _train_keys(s3_client, bucket, "mid")
    before = _frame_log(first_log, epoch=1, up_to_step=step)
    assert 0 < len(before) < len(train_keys)

    # Resume from latest, in another output directory and cache: nothing local survives.
    proxy.clear_faults()
    second_log = tmp_path / "frames2.log"
    monkeypatch.setenv("POKEVQ_FRAME_LOG", str(second_log))
    summary = train(TrainConfig(
        use_s3=True, s3_bucket=bucket, s3_endpoint_url=proxy.url, num_epochs=1, batch_size=4, num_workers=0,
        resume=f"s3://{bucket}/{prefix}checkpoint_latest.pt", local_cache_dir=str(tmp_path / "cache2"),
        output_dir=str(tmp_path / "out2"), no_fallback=True, **TINY,
    ))
    after = _frame_log(second_log, epoch=1)
    assert Counter(before + after) == Counter(train_keys)  # exactly one epoch: none repeated, none skipped
    assert summary["epochs_trained"] == 1
    log_text = s3_client.get_object(Bucket=bucket, Key="logs/mid/training_latest.log")["Body"].read().decode()
    assert f"in epoch 1 after global step {step}" in log_text


def test_sigterm_mid_epoch_stops_at_a_step_boundary_with_a_checkpoint_releases_the_lease_and_a_rerun_resumes(
    proxy, prefect_harness, tmp_path, bucket, s3_client, frames, monkeypatch
):
    """A pod eviction or a spot reclaim: SIGTERM ends the run like a budget, then says so in one line."""
    from prefect.settings import PREFECT_API_URL

    from flows.pokevq_flow import train

    args = slow_streaming_args(proxy, s3_client, bucket, frames, "term", "--cache-dir", str(tmp_path / "cache1"),
                               "--output-dir", str(tmp_path / "out1"), delay=0.5)
    first_log = tmp_path / "frames1.log"
    output = tmp_path / "run1.log"
    process = _start_run(args, {"PREFECT_API_URL": PREFECT_API_URL.value(), "POKEVQ_FRAME_LOG": str(first_log)},
                         output)
    try:
        _wait_for(lambda: first_log.exists() and len(_frame_log(first_log, epoch=1)) >= 8, process, output,
                  "training never started")
        os.kill(process.pid, signal.SIGTERM)
        proxy.clear_faults()  # the rest (validation, uploads) at full speed
        assert process.wait(timeout=120) == 1, output.read_text()[-3000:]
    finally:
        console, errors = ended(process, output)
    prefix = f"s3://{bucket}/checkpoints/term/"
    assert len(errors) == 1 and "Traceback" not in console, console[-3000:]
    found = re.fullmatch(rf"Error: Stopped by SIGTERM at step (\d+) inside epoch 1, with a checkpoint: retry this "
                         rf"flow run, or run again with --resume {re.escape(prefix)}checkpoint_latest\.pt, to "
                         "continue there", errors[0])
    assert found, errors
    step = int(found.group(1))
    steps = {int(line.split()[1]) for line in first_log.read_text().splitlines()}
    assert max(steps) == step  # the step under way finished, and no other began
    train_keys = _train_keys(s3_client, bucket, "term")
    assert step < len(train_keys) // 4  # inside the epoch
    # latest is that step's checkpoint, whole: its bytes are the ones recorded, and it loads with its position.
    head = s3_client.head_object(Bucket=bucket, Key="checkpoints/term/checkpoint_latest.pt")
    body = s3_client.get_object(Bucket=bucket, Key="checkpoints/term/checkpoint_latest.pt")["Body"].read()
    assert int(head["Metadata"]["global-step"]) == step
    assert hashlib.sha256(body).hexdigest() == head["Metadata"]["sha256"]
    state = load_checkpoint(body)
    assert state["global_step"] == step and state["position"]["epoch"] == 1
    listed = [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket, Prefix="checkpoints/term/")["Contents"]]
    assert "checkpoints/term/.lease.json" not in listed  # released
    report = s3_client.get_object(Bucket=bucket, Key="reports/term/report.md")["Body"].read().decode()
    assert f"SIGTERM ended training** at step {step}, inside epoch 1" in report

    # Run again from latest: the epoch continues where SIGTERM stopped it.
    second_log = tmp_path / "frames2.log"
    monkeypatch.setenv("POKEVQ_FRAME_LOG", str(second_log))
    summary = train(TrainConfig(
        use_s3=True, s3_bucket=bucket, s3_endpoint_url=proxy.url, num_epochs=1, batch_size=4, num_workers=0,
        resume=f"{prefix}checkpoint_latest.pt", local_cache_dir=str(tmp_path / "cache2"),
        output_dir=str(tmp_path / "out2"), no_fallback=True, **TINY,
    ))
    assert summary["epochs_trained"] == 1
    assert Counter(_frame_log(first_log, epoch=1) + _frame_log(second_log, epoch=1)) == Counter(train_keys)


def test_step_budget_ends_the_run_with_a_checkpoint_and_a_resume_finishes_the_epoch(
    prefect_harness, tmp_path, bucket, s3_client, moto_endpoint, frames, monkeypatch
):
    from flows.pokevq_flow import train

    upload_tree(s3_client, bucket, frames, "pokemon_frames/")
    common = dict(use_s3=True, s3_bucket=bucket, s3_endpoint_url=moto_endpoint, batch_size=4, num_workers=0,
                  no_fallback=True, **TINY)
    first_log = tmp_path / "frames1.log"
    monkeypatch.setenv("POKEVQ_FRAME_LOG", str(first_log))
    summary = train(TrainConfig(experiment_name="budget", num_epochs=2, max_steps=5, output_dir=str(tmp_path / "o1"),
                                local_cache_dir=str(tmp_path / "c1"), **common))
    assert summary["stopped_by"]["budget"] == "max_steps" and summary["stopped_by"]["global_step"] == 5
    assert summary["epochs_trained"] == 0
    keys = [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket, Prefix="checkpoints/budget/")["Contents"]]
    assert "checkpoints/budget/checkpoint_step_5.pt" in keys
    assert _latest_step(s3_client, bucket, "budget") == 5
    report = s3_client.get_object(Bucket=bucket, Key="reports/budget/report.md")["Body"].read().decode()
    assert "The max_steps budget ended training** at step 5, inside epoch 1" in report

    second_log = tmp_path / "frames2.log"
    monkeypatch.setenv("POKEVQ_FRAME_LOG", str(second_log))
    summary = train(TrainConfig(num_epochs=2, resume=f"s3://{bucket}/checkpoints/budget/checkpoint_latest.pt",
                                output_dir=str(tmp_path / "o2"), local_cache_dir=str(tmp_path / "c2"), **common))
    assert summary["epochs_trained"] == 2 and not summary["stopped_by"]
    train_keys = _train_keys(s3_client, bucket, "budget")
    epoch1 = _frame_log(first_log, epoch=1) + _frame_log(second_log, epoch=1)
    assert Counter(epoch1) == Counter(train_keys)
    assert Counter(_frame_log(second_log, epoch=2)) == Counter(train_keys)


def test_time_budget_ends_the_run_at_a_step_boundary_with_a_checkpoint_and_the_report_says_so(
    prefect_harness, tmp_path, bucket, s3_client, moto_endpoint, frames
):
    from flows.pokevq_flow import train

    upload_tree(s3_client, bucket, frames, "pokemon_frames/")
    started = time.monotonic()
    summary = train(TrainConfig(
        use_s3=True, s3_bucket=bucket, s3_endpoint_url=moto_endpoint, experiment_name="timed", num_epochs=30,
        batch_size=4, num_workers=0, time_budget="1s", output_dir=str(tmp_path / "o"),
        local_cache_dir=str(tmp_path / "c"), no_fallback=True, **TINY,
    ))
    seconds = time.monotonic() - started
    stopped = summary["stopped_by"]
    assert stopped and stopped["budget"] == "time_budget", summary["epochs_trained"]
    assert summary["epochs_trained"] == stopped["epoch"] - 1 < 30  # it ended inside an epoch, long before the last
    assert seconds >= 1  # not before the budget was spent
    step = stopped["global_step"]
    keys = [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket, Prefix="checkpoints/timed/")["Contents"]]
    assert f"checkpoints/timed/checkpoint_step_{step}.pt" in keys
    assert _latest_step(s3_client, bucket, "timed") == step
    latest = s3_client.get_object(Bucket=bucket, Key="checkpoints/timed/checkpoint_latest.pt")["Body"].read()
    state = load_checkpoint(latest)
    assert state["global_step"] == step and state["position"]["epoch"] == stopped["epoch"]  # resumable mid-epoch
    report = s3_client.get_object(Bucket=bucket, Key="reports/timed/report.md")["Body"].read().decode()
    assert (f"The time_budget budget ended training** at step {step}, inside epoch {stopped['epoch']}; "
            f"its checkpoint records the position. Resume with `--resume s3://{bucket}/checkpoints/timed/"
            "checkpoint_latest.pt`") in report


def test_retried_flow_run_continues_the_interrupted_epoch_from_its_step_checkpoint(
    proxy, prefect_harness, tmp_path, bucket, s3_client, frames, monkeypatch
):
    import shutil

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from tests.helpers.flow_runs import retry_flow_run, task_states

    args = slow_streaming_args(proxy, s3_client, bucket, frames, "retried", "--checkpoint-every-steps", "2",
                               "--output-dir", str(tmp_path / "out"))
    first_log = tmp_path / "frames1.log"
    env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "POKEVQ_FRAME_LOG": str(first_log),
           "POKEVQ_S3_MAX_ATTEMPTS": "1", "POKEVQ_TASK_RETRY_DELAYS": ""}
    prefix = "checkpoints/retried/"
    process = _start_run(args, env, tmp_path / "run1.log")
    try:
        _wait_for(lambda: s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix + "checkpoint_latest").get("KeyCount"),
                  process, tmp_path / "run1.log", "no mid-epoch checkpoint was published")
        proxy.go_down()  # S3 unreachable in the middle of the epoch: the run fails
        assert process.wait(timeout=120) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Error: Unable to connect to S3" in (tmp_path / "run1.log").read_text()
    listed = [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert prefix + "checkpoint_epoch_1.pt" not in listed

    # S3 is back; the same flow run is retried on a machine without its work files.
    proxy.come_back()
    proxy.clear_faults()
    shutil.rmtree(tmp_path / "out" / "runs" / "retried")
    with get_client(sync_client=True) as client:
        runs = [run for run in client.read_flow_runs() if run.parameters.get("experiment_name") == "retried"]
    assert len(runs) == 1 and runs[0].state.is_failed()
    second_log = tmp_path / "frames2.log"
    monkeypatch.setenv("POKEVQ_FRAME_LOG", str(second_log))
    retried = retry_flow_run(runs[0].id)
    assert retried.is_completed(), retried.message
    train_keys = _train_keys(s3_client, bucket, "retried")
    # The newest step checkpoint the first attempt uploaded (its last may have landed after `latest` moved).
    log_text = s3_client.get_object(Bucket=bucket, Key="logs/retried/training_latest.log")["Body"].read().decode()
    found = re.search(r"Continuing retried after epoch 0 from s3://\S+/checkpoint_step_(\d+)\.pt", log_text)
    assert found, log_text[-2000:]
    step = int(found.group(1))
    before = _frame_log(first_log, epoch=1, up_to_step=step)
    after = _frame_log(second_log, epoch=1)
    assert 0 < len(before) < len(train_keys)
    assert Counter(before + after) == Counter(train_keys)  # the epoch continued, it did not start again
    assert task_states(runs[0].id)["train_epoch[1]"][-1] == "Completed"
