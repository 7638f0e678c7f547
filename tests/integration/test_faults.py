"""Faults between the pipeline and S3, killed runs and concurrent runs: what a user is promised.

Every network fault is injected by `tests/s3_proxy.py` (a real HTTP proxy) between the pipeline,
whose S3 endpoint is the proxy, and moto's server; nothing mocks boto3. Flows run on a real Prefect
API (the harness), a killed run is a real `pokevq train` process killed with SIGKILL, and a retry
is the same flow run put back to AwaitingRetry and run again by Prefect's engine, as the UI's
Retry button and a worker do.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
import torch

from flows import pokevq, train
from pokevq import TrainConfig
from pokevq.errors import InvalidCredentialsError, StorageError
from pokevq.model.vqvae import VQVAE, ModelConfig
from pokevq.run.lease import Lease, LeaseHeldError, LeaseLostError, LeaseOwner
from pokevq.run.resume import resolve_resume
from pokevq.storage import LocalStorage, S3Storage
from pokevq.train.checkpoint import CheckpointCorruptError, build_checkpoint
from tests.helpers.flow_runs import retry_flow_run, task_states
from tests.helpers.frames import upload_tree
from tests.helpers.runs import (
    TINY,
    TINY_FLAGS,
    ended,
    list_keys,
    s3_train_config,
    slow_streaming_args,
    tensorboard_scalars,
)
from tests.helpers.s3_proxy import FaultProxy

pytestmark = pytest.mark.faults

LAYOUT_PREFIXES = ("checkpoints", "tensorboard", "logs", "manifests", "reports")


# ----------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def s3(moto_endpoint):
    """A client straight to moto (never through the proxy): what is really in the bucket."""
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture(scope="module")
def frames_bucket(s3, synth_frames) -> str:
    name = f"pokevq-faults-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    upload_tree(s3, name, synth_frames)
    return name


@pytest.fixture
def proxy(moto_endpoint):
    proxy = FaultProxy(moto_endpoint).start()
    yield proxy
    proxy.come_back()
    proxy.stop()


@pytest.fixture
def quick_retries(monkeypatch):
    """Few client attempts and short task retry delays: the knobs users have, set small for tests."""
    monkeypatch.setenv("POKEVQ_S3_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("POKEVQ_TASK_RETRY_DELAYS", "0.2,0.5,1")


def _config(root: Path, bucket: str, endpoint: str, experiment: str | None, **overrides) -> TrainConfig:
    return s3_train_config(root, bucket, endpoint, **{"experiment_name": experiment, **overrides})


def _get(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def layout_keys(s3, bucket: str, experiment: str) -> list[str]:
    """Every key an experiment wrote, with its name replaced and TensorBoard's host/pid/time file names masked."""
    found = []
    for prefix in LAYOUT_PREFIXES:
        for key in list_keys(s3, bucket, f"{prefix}/{experiment}/"):
            key = f"{prefix}/<exp>/" + key[len(f"{prefix}/{experiment}/"):]
            found.append(re.sub(r"events\.out\.tfevents\.[^/]+$", "events.out.tfevents.*", key))
    return sorted(found)


def objects(s3, bucket: str, experiment: str) -> dict[str, tuple[str, str]]:
    """key -> (ETag, SHA-256 of the bytes) of an experiment's objects."""
    found = {}
    for prefix in LAYOUT_PREFIXES:
        for key in list_keys(s3, bucket, f"{prefix}/{experiment}/"):
            response = s3.get_object(Bucket=bucket, Key=key)
            found[key] = (response["ETag"], hashlib.sha256(response["Body"].read()).hexdigest())
    return found


def assert_checkpoints_verify(s3, bucket: str, experiment: str, epochs: int) -> None:
    """Each checkpoint's bytes hash to the sha256 recorded at upload; latest is the last epoch's."""
    prefix = f"checkpoints/{experiment}/"
    for key in list_keys(s3, bucket, prefix):
        if key.endswith(".pt"):
            response = s3.get_object(Bucket=bucket, Key=key)
            assert hashlib.sha256(response["Body"].read()).hexdigest() == response["Metadata"]["sha256"], key
    latest = _get(s3, bucket, prefix + "checkpoint_latest.pt")
    assert latest == _get(s3, bucket, prefix + f"checkpoint_epoch_{epochs}.pt")
    assert torch.load(io.BytesIO(latest), weights_only=True)["epoch"] == epochs


def epoch_steps(s3, bucket: str, experiment: str, target: Path) -> list[int]:
    """The epochs TensorBoard shows for an experiment, read with TensorBoard's own reader."""
    return [event.step for event in tensorboard_scalars(s3, bucket, experiment, target)["epoch/val_loss"]]


@pytest.fixture(scope="module")
def clean_keys(prefect_harness, tmp_path_factory, frames_bucket, moto_endpoint, s3) -> list[str]:
    """The keys a clean 2-epoch run writes (experiment name masked): what every faulted run must end with."""
    summary = train(_config(tmp_path_factory.mktemp("clean"), frames_bucket, moto_endpoint, "clean"))
    assert summary["epochs_trained"] == 2
    keys = layout_keys(s3, frames_bucket, "clean")
    assert "checkpoints/<exp>/checkpoint_epoch_2.pt" in keys and "reports/<exp>/report.md" in keys
    assert not any(".lease.json" in key or "write-probe" in key for key in keys)
    return keys


# ----------------------------------------------------------------------------- connection faults


def test_dropped_and_reset_connections_end_with_the_clean_runs_objects(
    clean_keys, proxy, quick_retries, tmp_path, frames_bucket, s3
):
    b = re.escape(frames_bucket)
    listing = rf"^GET /{b}\?list-type=2"
    frames = rf"^GET /{b}/pokemon_frames/"
    checkpoint = rf"^PUT /{b}/checkpoints/faulty/checkpoint_epoch_"
    tensorboard = rf"^PUT /{b}/tensorboard/faulty/"
    faults = [
        proxy.add_fault("drop", listing, times=1),  # validation's first listing never reaches S3
        proxy.add_fault("reset", listing, after=1, every=2, times=2),  # later listings: half an answer, then RST
        proxy.add_fault("drop", frames, every=4, times=4),  # cache warming
        proxy.add_fault("reset", frames, after=1, every=4, times=4),
        proxy.add_fault("reset", rf"^PUT /{b}/checkpoints/faulty/\.lease\.json", times=1),  # took effect, no answer
        proxy.add_fault("drop", checkpoint + r"1\.pt", times=1),
        proxy.add_fault("truncate", checkpoint + r"1\.pt", times=1),  # stored half, S3 says 200
        proxy.add_fault("reset", checkpoint + r"2\.pt", times=1),
        proxy.add_fault("reset", rf"^HEAD /{b}/checkpoints/faulty/checkpoint_epoch_", times=1),
        proxy.add_fault("reset", rf"^PUT /{b}/checkpoints/faulty/checkpoint_latest\.pt", times=1),  # the copy
        proxy.add_fault("drop", tensorboard, times=1),
        proxy.add_fault("reset", tensorboard, after=1, times=1),
        proxy.add_fault("drop", rf"^PUT /{b}/logs/faulty/", times=1),
    ]

    summary = train(_config(tmp_path, frames_bucket, proxy.url, "faulty"))

    assert summary["epochs_trained"] == 2
    assert summary["skipped_frames"] == 0  # a reset mid-download never turns a good frame into a skipped one
    print(f"faults injected: {[(f.kind, f.pattern.pattern[-30:], f.injected) for f in faults]}; "
          f"{proxy.injected_count()} of {proxy.requests} requests")
    not_hit = [(f.kind, f.pattern.pattern) for f in faults if f.injected == 0]
    assert not not_hit, f"faults never injected: {not_hit}"
    assert layout_keys(s3, frames_bucket, "faulty") == clean_keys
    assert_checkpoints_verify(s3, frames_bucket, "faulty", epochs=2)


def test_throttling_on_30_percent_of_requests_completes(clean_keys, proxy, monkeypatch, tmp_path, frames_bucket, s3):
    monkeypatch.setenv("POKEVQ_TASK_RETRY_DELAYS", "0.2,0.5,1")
    first = proxy.add_fault("slowdown", ".*", times=2)  # validation's first checks are throttled, for sure
    proxy.add_fault("slowdown", ".*", rate=0.3, seed=3)

    # Fallback allowed: a throttled check must be retried, not taken for an unusable S3.
    summary = train(_config(tmp_path, frames_bucket, proxy.url, "throttled", no_fallback=False))

    assert first.injected == 2
    assert summary["epochs_trained"] == 2 and summary["fallback"] is False
    assert summary["report_uri"].startswith(f"s3://{frames_bucket}/"), summary["report_uri"]
    print(f"503 SlowDown: {proxy.injected_count('slowdown')} of {proxy.requests} requests")
    assert proxy.injected_count("slowdown") >= 0.2 * proxy.requests, (proxy.injected_count("slowdown"), proxy.requests)
    assert layout_keys(s3, frames_bucket, "throttled") == clean_keys
    assert_checkpoints_verify(s3, frames_bucket, "throttled", epochs=2)


def _requests(proxy: FaultProxy, method: str, path: str) -> int:
    """How many times the pipeline sent this request (every attempt, answered or not)."""
    return sum(1 for m, p, _ in proxy.seen if m == method and p.split("?")[0] == path)


def test_an_upload_that_fails_for_good_stops_training_and_a_retry_continues(
    proxy, quick_retries, prefect_harness, tmp_path, frames_bucket, s3
):
    """A denied upload is tried once per task run, a throttled one is retried, and no epoch starts
    after an upload failed for good: only the next epoch may overlap an upload."""
    epoch1 = f"/{frames_bucket}/checkpoints/stopped/checkpoint_epoch_1.pt"
    denied = proxy.add_fault("deny", rf"^PUT {re.escape(epoch1)}$")  # a permission the keys lack: 403

    state = pokevq(**_config(tmp_path, frames_bucket, proxy.url, "stopped", num_epochs=3).to_dict(),
                   return_state=True)

    assert state.is_failed()
    error = str(state.result(raise_on_failure=False))
    assert "AccessDenied" in error or "Access denied" in error
    assert denied.injected == 1 and _requests(proxy, "PUT", epoch1) == 1  # no client retry, no task retry
    flow_run_id = state.state_details.flow_run_id
    states = task_states(flow_run_id)
    assert states["upload_checkpoint[1]"] == ["Failed"]
    assert "train_epoch[3]" not in states, states  # epoch 3 never started
    keys = list_keys(s3, frames_bucket, "checkpoints/stopped/")
    assert not any(key.endswith(".pt") for key in keys), keys  # nothing published after the failed upload

    # The permission is fixed; the same flow run is retried, and S3 throttles epoch 3's upload twice.
    proxy.clear_faults()
    epoch3 = f"/{frames_bucket}/checkpoints/stopped/checkpoint_epoch_3.pt"
    throttled = proxy.add_fault("slowdown", rf"^PUT {re.escape(epoch3)}$", times=2)
    retried = retry_flow_run(flow_run_id)

    assert retried.is_completed(), retried
    assert _requests(proxy, "PUT", epoch1) == 2  # once per task run
    assert throttled.injected == 2 and _requests(proxy, "PUT", epoch3) == 3  # 503s retried until stored
    states = task_states(flow_run_id)
    assert states["train_epoch[1]"][-1] == "Cached" and states["train_epoch[2]"][-1] == "Cached"
    assert states["upload_checkpoint[1]"][-1] == "Completed"
    assert states["train_epoch[3]"] == ["Completed"]  # trained once, by the retry, after epoch 2
    assert_checkpoints_verify(s3, frames_bucket, "stopped", epochs=3)
    final = torch.load(io.BytesIO(_get(s3, frames_bucket, "checkpoints/stopped/checkpoint_latest.pt")),
                       weights_only=True)
    assert [h["epoch"] for h in final["history"]] == [1, 2, 3]


# ----------------------------------------------------------------------------- verified checkpoints


def test_truncated_checkpoint_upload_never_becomes_latest(proxy, monkeypatch, tmp_path, frames_bucket, s3):
    monkeypatch.setenv("POKEVQ_S3_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("POKEVQ_TASK_RETRY_DELAYS", "0.1,0.1")
    b = re.escape(frames_bucket)
    proxy.add_fault("truncate", rf"^PUT /{b}/checkpoints/truncated/checkpoint_epoch_2\.pt$")

    with pytest.raises(StorageError) as info:
        train(_config(tmp_path, frames_bucket, proxy.url, "truncated"))

    uri = f"s3://{frames_bucket}/checkpoints/truncated/checkpoint_epoch_2.pt"
    message = str(info.value)
    assert message.startswith(f"Checkpoint upload of {uri} could not be verified (expected "), message
    assert "the bad object was removed; checkpoint_latest.pt and checkpoint_best.pt were not moved to it" in message
    assert proxy.injected_count("truncate") == 3  # the upload and both task retries, each caught
    prefix = "checkpoints/truncated/"
    epoch1 = _get(s3, frames_bucket, prefix + "checkpoint_epoch_1.pt")
    assert _get(s3, frames_bucket, prefix + "checkpoint_latest.pt") == epoch1
    assert _get(s3, frames_bucket, prefix + "checkpoint_best.pt") == epoch1
    keys = list_keys(s3, frames_bucket, prefix)
    assert prefix + "checkpoint_epoch_2.pt" not in keys  # nothing partial is left to resume from
    assert prefix + ".lease.json" not in keys  # released although the run failed


def _checkpoint_bytes(epoch: int) -> bytes:
    torch.manual_seed(epoch)
    config = ModelConfig(image_size=(72, 80), hidden_channels=8, embedding_dim=4, codebook_size=16)
    model = VQVAE(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = build_checkpoint(
        model, optimizer, epoch=epoch, global_step=epoch * 3, config={"experiment_name": "verify"},
        model_config=config.to_dict(), metrics={}, history=[{"epoch": e} for e in range(1, epoch + 1)], best=None,
    )
    buffer = io.BytesIO()
    torch.save(state.to_state(), buffer)
    return buffer.getvalue()


def test_resume_verifies_checkpoints_and_falls_back_from_a_bad_latest(
    moto_endpoint, s3, tmp_path, caplog, frames_bucket
):
    prefix = "checkpoints/verify/"
    good = {epoch: _checkpoint_bytes(epoch) for epoch in (1, 2, 3)}

    def put(name: str, body: bytes, of: bytes) -> None:
        s3.put_object(Bucket=frames_bucket, Key=prefix + name, Body=body,
                      Metadata={"sha256": hashlib.sha256(of).hexdigest()})

    flipped = bytearray(good[3])
    flipped[len(flipped) // 2] ^= 0xFF
    put("checkpoint_epoch_1.pt", good[1], good[1])
    put("checkpoint_epoch_2.pt", good[2], good[2])
    put("checkpoint_epoch_3.pt", bytes(flipped), good[3])  # same size, altered bytes
    put("checkpoint_latest.pt", good[3][: len(good[3]) // 2], good[3])  # partial
    s3.put_object(Bucket=frames_bucket, Key=prefix + "checkpoint_epoch_10.pt", Body=b"junk")  # no sha, unreadable

    def resume(name: str) -> TrainConfig:
        return _config(tmp_path, frames_bucket, moto_endpoint, None, resume=f"s3://{frames_bucket}/{prefix}{name}")

    with pytest.raises(CheckpointCorruptError) as info:
        resolve_resume(resume("checkpoint_epoch_3.pt"), tmp_path / "work")
    message = str(info.value)
    assert message.startswith(f"Checkpoint s3://{frames_bucket}/{prefix}checkpoint_epoch_3.pt is corrupt: its SHA-256")
    assert "\n" not in message

    with caplog.at_level(logging.WARNING, logger="pokevq"):
        state, name = resolve_resume(resume("checkpoint_latest.pt"), tmp_path / "work")
    assert state["epoch"] == 2 and name == f"s3://{frames_bucket}/{prefix}checkpoint_epoch_2.pt"
    warnings = "\n".join(record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING)
    assert f"Checkpoint s3://{frames_bucket}/{prefix}checkpoint_latest.pt is corrupt" in warnings
    assert f"Resuming from s3://{frames_bucket}/{prefix}checkpoint_epoch_2.pt instead" in warnings
    assert "checkpoint_epoch_3.pt is corrupt" in warnings and "checkpoint_epoch_10.pt" in warnings


# ----------------------------------------------------------------------------- endpoint down, then a retry


def test_endpoint_down_fails_clearly_keeps_uploads_and_a_retry_resumes(
    clean_keys, proxy, monkeypatch, tmp_path, frames_bucket, s3
):
    monkeypatch.setenv("POKEVQ_S3_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("POKEVQ_TASK_RETRY_DELAYS", "0.2,0.2")
    before: dict[str, tuple[str, str]] = {}
    snapshot_taken = threading.Event()

    def snapshot() -> None:  # called once the endpoint is down and nothing is in flight
        before.update(objects(s3, frames_bucket, "down"))
        snapshot_taken.set()

    proxy.down_when(rf"^PUT /{re.escape(frames_bucket)}/checkpoints/down/checkpoint_epoch_2\.pt$", on_down=snapshot)
    state = pokevq(**_config(tmp_path, frames_bucket, proxy.url, "down").to_dict(), return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert str(error).startswith(f"Unable to connect to S3 at {proxy.url}"), error
    assert snapshot_taken.wait(30)
    assert "checkpoints/down/checkpoint_epoch_1.pt" in before
    assert before["checkpoints/down/checkpoint_latest.pt"][1] == before["checkpoints/down/checkpoint_epoch_1.pt"][1]
    assert "checkpoints/down/checkpoint_epoch_2.pt" not in before

    # The endpoint is back; the run is retried on a machine without its work files (a fresh worker).
    proxy.come_back()
    shutil.rmtree(tmp_path / "outputs" / "runs" / "down")
    flow_run_id = state.state_details.flow_run_id
    retried = retry_flow_run(flow_run_id)

    assert retried.is_completed(), retried
    # Nothing uploaded before the outage was deleted or overwritten, through the outage and the retry:
    # every object is there with the same ETag and bytes, but for the pointers and files a run rewrites
    # by design (latest/best move forward, the latest log grows, the manifest is re-indexed, and the run's
    # own lease, left by the failed attempt, is released by the retry).
    after = objects(s3, frames_bucket, "down")
    rewritten = ("checkpoint_latest.pt", "checkpoint_best.pt", "_latest.log", "manifest.parquet", "report.md",
                 ".lease.json")
    kept = {key: value for key, value in before.items() if not key.endswith(rewritten)}
    assert "checkpoints/down/checkpoint_epoch_1.pt" in kept and any(key.startswith("tensorboard/") for key in kept)
    assert {key: after.get(key) for key in kept} == kept
    states = task_states(flow_run_id)
    assert states["train_epoch[1]"][-1] == "Cached"  # published before the outage: not trained again
    assert states["train_epoch[2]"][-1] == "Completed"  # trained again from epoch 1's checkpoint
    assert states["upload_checkpoint[1]"][-1] == "Cached"
    # The same keys as a clean run; TensorBoard starts a new event file per writer, so the retry adds some,
    # and the curves read back as one run's.
    assert set(layout_keys(s3, frames_bucket, "down")) == set(clean_keys)
    assert epoch_steps(s3, frames_bucket, "down", tmp_path / "tb") == [1, 2]
    assert_checkpoints_verify(s3, frames_bucket, "down", epochs=2)
    final = torch.load(io.BytesIO(_get(s3, frames_bucket, "checkpoints/down/checkpoint_latest.pt")), weights_only=True)
    epoch1 = torch.load(io.BytesIO(_get(s3, frames_bucket, "checkpoints/down/checkpoint_epoch_1.pt")),
                        weights_only=True)
    assert [h["epoch"] for h in final["history"]] == [1, 2]
    assert final["history"][0] == epoch1["history"][0]


def test_credentials_that_expire_mid_run_fail_with_one_line_keep_uploads_and_a_retry_resumes(
    prefect_harness, proxy, monkeypatch, tmp_path, frames_bucket, s3
):
    """Temporary (STS) credentials running out during training: S3 answers every request `ExpiredToken`."""
    monkeypatch.setenv("POKEVQ_TASK_RETRY_DELAYS", "0.2,0.2")
    # From the upload of epoch 2's checkpoint on, every request is refused: the session's token has expired.
    proxy.add_fault("expired", ".*",
                    start_when=rf"^PUT /{re.escape(frames_bucket)}/checkpoints/expired/checkpoint_epoch_2\.pt")
    state = pokevq(**_config(tmp_path, frames_bucket, proxy.url, "expired").to_dict(), return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidCredentialsError) and "\n" not in str(error)
    assert re.match(r"^AWS credentials expired \(access key \S+\): ExpiredToken during upload_file of "
                    r"checkpoints/expired/checkpoint_epoch_2\.pt\. Renew them .* then retry the flow run or resume "
                    r"from checkpoint_latest\.pt: what was uploaded is kept\.$", str(error)), error
    assert proxy.injected_count("expired") >= 1
    # Not retried in vain: an expired token is refused again until it is renewed.
    assert sum(1 for _, method, path in proxy.injected if method == "PUT" and "checkpoint_epoch_2" in path) == 1
    before = objects(s3, frames_bucket, "expired")
    assert "checkpoints/expired/checkpoint_epoch_2.pt" not in before
    epoch1 = before["checkpoints/expired/checkpoint_epoch_1.pt"]
    assert before["checkpoints/expired/checkpoint_latest.pt"][1] == epoch1[1]

    # Renewed credentials: a retry of the flow run uploads epoch 2 and keeps what was uploaded before.
    proxy.clear_faults()
    flow_run_id = state.state_details.flow_run_id
    retried = retry_flow_run(flow_run_id)
    assert retried.is_completed(), retried
    after = objects(s3, frames_bucket, "expired")
    assert after["checkpoints/expired/checkpoint_epoch_1.pt"] == epoch1
    assert task_states(flow_run_id)["train_epoch[2]"][-1] == "Cached"  # trained once, uploaded by the retry
    assert_checkpoints_verify(s3, frames_bucket, "expired", epochs=2)
    assert "checkpoints/expired/.lease.json" not in after  # the retry took its own lease and released it


# ----------------------------------------------------------------------------- a full disk


def _on_a_small_disk(mountpoint: Path, size: str) -> list[str]:
    """A command prefix that runs the command with a `size` tmpfs mounted at `mountpoint`, seen by it alone.

    A user and mount namespace (`unshare -rm`) lets a test mount a real, small filesystem without root, so
    the disk really fills (ENOSPC) under whatever the run writes; a file size limit (RLIMIT_FSIZE) would
    fail only the large files, with another error (EFBIG), and a loop device needs root.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mountpoint}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs in a user namespace here: {probe.stderr.strip()}")
    return ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"', "sh",
            size, str(mountpoint)]


def test_a_full_disk_under_the_output_directory_ends_the_run_with_one_line_and_loses_nothing_uploaded(
    prefect_harness, tmp_path, frames_bucket, moto_endpoint, s3
):
    from prefect.settings import PREFECT_API_URL

    disk = tmp_path / "disk"
    command = [*_on_a_small_disk(disk, "8m"), sys.executable, "-m", "pokevq", "train", "--use-s3", "--s3-bucket",
               frames_bucket, "--s3-endpoint-url", moto_endpoint, "--experiment-name", "fulldisk", "--epochs", "50",
               "--batch-size", "4", "--num-workers", "0", "--output-dir", str(disk / "out"), "--cache-dir",
               str(tmp_path / "cache"), "--no-fallback", *TINY_FLAGS]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "POKEVQ_TASK_RETRY_DELAYS": "0.2"}
    output = tmp_path / "run.log"
    prefix = "checkpoints/fulldisk/"
    with open(output, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not list_keys(s3, frames_bucket, prefix + "checkpoint_latest.pt"):  # an epoch is saved
            assert process.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint was published"
            time.sleep(0.05)
        # The disk fills up (another job on the machine, say), seen through the run's own mount namespace.
        with pytest.raises(OSError) as full, open(f"/proc/{process.pid}/root{disk}/filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        assert full.value.errno == errno.ENOSPC
        assert process.wait(timeout=180) == 1, output.read_text()[-3000:]
    finally:
        console, errors = ended(process, output)
    assert len(errors) == 1 and "No space left on device" in errors[0], console[-3000:]
    assert "--output-dir" in errors[0] or "free space" in errors[0], errors
    assert "Traceback" not in console and "Logging error" not in console, console[-3000:]
    # Everything uploaded before is whole: each checkpoint's bytes are the ones recorded, latest is one of them.
    keys = list_keys(s3, frames_bucket, prefix)
    for key in keys:
        if key.endswith(".pt"):
            response = s3.get_object(Bucket=frames_bucket, Key=key)
            assert hashlib.sha256(response["Body"].read()).hexdigest() == response["Metadata"]["sha256"], key
    latest = _get(s3, frames_bucket, prefix + "checkpoint_latest.pt")
    epoch = torch.load(io.BytesIO(latest), weights_only=True)["epoch"]
    assert latest == _get(s3, frames_bucket, prefix + f"checkpoint_epoch_{epoch}.pt")
    assert prefix + ".lease.json" not in keys  # released


# ----------------------------------------------------------------------------- a killed run, and a second run


def test_killed_run_resumes_from_its_last_epoch_and_a_second_run_is_refused_meanwhile(
    proxy, prefect_harness, tmp_path, frames_bucket, s3, synth_frames, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("POKEVQ_TASK_RETRY_DELAYS", "0.2,0.5")
    # Small shards come through a slow link into a cache of a few of them: every epoch takes seconds, time to kill it.
    args = [sys.executable, "-m", "pokevq", "train", *slow_streaming_args(
        proxy, s3, frames_bucket, synth_frames, "killed", "--epochs", "3", "--learning-rate", "0.001",
        "--cache-dir", str(tmp_path / "cache1"), "--output-dir", str(tmp_path / "out1"), delay=2.0, shard_bytes=2048,
        upload=False)]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    log = open(tmp_path / "killed.log", "wb")
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    prefix = "checkpoints/killed/"
    try:
        deadline = time.monotonic() + 240
        while prefix + "checkpoint_latest.pt" not in list_keys(s3, frames_bucket, prefix):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "epoch 1 was never published"
            time.sleep(0.2)

        # A second run of the same experiment while the first trains: refused before it writes anything.
        with pytest.raises(LeaseHeldError) as info:
            train(_config(tmp_path / "second", frames_bucket, proxy.url, "killed", num_epochs=1))
        message = str(info.value)
        match = re.fullmatch(
            r"Experiment killed is already being trained by flow run ([0-9a-f-]{36}) \((.+), pid (\d+)\) "
            r"\(lease until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\): pick another --experiment-name or wait "
            r"\(the lease is s3://.+/checkpoints/killed/\.lease\.json\)",
            message,
        )
        assert match, message
        assert match.group(2) == socket.gethostname() and int(match.group(3)) == process.pid

        # Kill the first run in the middle of epoch 2.
        with get_client(sync_client=True) as client:
            while True:
                runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[match.group(1)])),
                    task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["train_epoch[2]"])),
                )
                if runs and runs[0].state_type.value == "RUNNING":
                    break
                assert process.poll() is None and time.monotonic() < deadline, "epoch 2 never started"
                time.sleep(0.1)
        time.sleep(0.5)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert process.returncode == -signal.SIGKILL
    keys = list_keys(s3, frames_bucket, prefix)
    assert prefix + "checkpoint_epoch_2.pt" not in keys, "epoch 2 finished before the kill"
    assert prefix + ".lease.json" in keys  # a killed process releases nothing
    at_kill = torch.load(io.BytesIO(_get(s3, frames_bucket, prefix + "checkpoint_latest.pt")), weights_only=True)
    assert at_kill["epoch"] == 1

    # Resume from latest (another output dir: nothing local survives), the link fast again.
    proxy.clear_faults()
    summary = train(_config(tmp_path / "resumed", frames_bucket, proxy.url, None, num_epochs=3,
                            resume=f"s3://{frames_bucket}/{prefix}checkpoint_latest.pt"))

    assert summary["epochs_trained"] == 3
    final = torch.load(io.BytesIO(_get(s3, frames_bucket, prefix + "checkpoint_latest.pt")), weights_only=True)
    assert final["epoch"] == 3
    assert [h["epoch"] for h in final["history"]] == [1, 2, 3]
    assert final["history"][0] == at_kill["history"][0]  # the completed epoch's metrics are unchanged
    assert final["global_step"] > at_kill["global_step"]
    training_log = _get(s3, frames_bucket, "logs/killed/training_latest.log").decode()
    assert f"Resumed from s3://{frames_bucket}/{prefix}checkpoint_latest.pt: epoch 1" in training_log
    assert f"pid {process.pid}) no longer runs on this host" in training_log  # the dead run's lease taken over
    assert prefix + ".lease.json" not in list_keys(s3, frames_bucket, prefix)


# ----------------------------------------------------------------------------- the lease itself


@pytest.fixture(params=["s3", "local"])
def lease_storage(request, moto_endpoint, s3, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "outputs")
    name = f"pokevq-lease-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return S3Storage(name, "us-east-1", endpoint_url=moto_endpoint)


def _owner(name: str, pid: int = 11, hostname: str | None = None) -> LeaseOwner:
    return LeaseOwner(id=name, hostname=hostname or f"host-{name}", pid=pid, flow_run_id=name)


def test_lease_one_holder_renewal_expiry_and_release(lease_storage):
    now = [1_000_000.0]

    def lease(owner: LeaseOwner) -> Lease:
        return Lease.for_experiment(lease_storage, "checkpoints/exp/", "exp", owner, ttl=60, clock=lambda: now[0],
                                    race_delay=0.01)

    first = lease(_owner("run-a"))
    assert first.acquire() is None
    other = lease(_owner("run-b"))
    with pytest.raises(LeaseHeldError) as info:
        other.acquire()
    assert str(info.value).startswith(
        "Experiment exp is already being trained by flow run run-a (host-run-a, pid 11) "
        "(lease until 1970-01-12T13:47:40Z): pick another --experiment-name or wait"
    )

    retry = lease(_owner("run-a", pid=12))  # the same flow run, retried in another process
    assert retry.acquire() == "it is this run's own lease (a retry)"
    now[0] += 50
    retry.renew()  # until now + 60
    now[0] += 30
    with pytest.raises(LeaseHeldError):
        other.acquire()  # 80 s after the start, still held thanks to the renewal

    now[0] += 31  # the holder stopped renewing (killed on another host, say): the lease expires
    assert "expired at" in other.acquire()
    with pytest.raises(LeaseLostError, match="Lost the lease on experiment exp: it is now held by flow run run-b"):
        retry.renew()
    assert retry.release() is False  # only the holder removes it
    assert lease_storage.exists("checkpoints/exp/.lease.json")
    assert other.release() is True
    assert not lease_storage.exists("checkpoints/exp/.lease.json")
    assert lease(_owner("run-c")).acquire() is None


def test_lease_of_a_dead_process_on_this_host_is_taken_over(lease_storage):
    here = socket.gethostname()
    newcomer = Lease.for_experiment(lease_storage, "checkpoints/exp/", "exp", LeaseOwner.current("new-run"), ttl=3600)
    alive = Lease.for_experiment(lease_storage, "checkpoints/exp/", "exp",
                                 _owner("alive-run", pid=os.getppid(), hostname=here), ttl=3600)
    alive.acquire()
    with pytest.raises(LeaseHeldError):
        newcomer.acquire()  # its holder still runs on this host: the lease stands until it expires
    alive.release()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = Lease.for_experiment(lease_storage, "checkpoints/exp/", "exp",
                                  _owner("killed-run", pid=dead.pid, hostname=here), ttl=3600)
    killed.acquire()  # and never released: the process is gone
    assert f"pid {dead.pid}) no longer runs on this host" in newcomer.acquire()
    assert newcomer.release() is True


def test_lease_race_has_exactly_one_winner(lease_storage):
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def contend(index: int) -> None:
        lease = Lease.for_experiment(lease_storage, "checkpoints/race/", "race", _owner(f"run-{index}"), ttl=600,
                                     race_delay=0.2)
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append("won")
        except LeaseHeldError:
            outcomes.append("refused")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["won"]


@pytest.mark.parametrize("backend", ["s3", "local"])
def test_flow_refuses_to_start_while_another_run_holds_the_lease(
    backend, prefect_harness, tmp_path, frames_bucket, moto_endpoint, s3, synth_frames
):
    experiment = f"busy-{backend}"
    owner = LeaseOwner(id="0b6f1e0c-1111-4a4a-8888-000000000000", hostname="trainer-7", pid=4242,
                       flow_run_id="0b6f1e0c-1111-4a4a-8888-000000000000")
    if backend == "s3":
        config = _config(tmp_path, frames_bucket, moto_endpoint, experiment)
        storage = S3Storage(frames_bucket, "us-east-1", endpoint_url=moto_endpoint)
    else:
        config = TrainConfig(frames_dir=str(synth_frames), experiment_name=experiment, num_epochs=1, batch_size=4,
                             num_workers=0, output_dir=str(tmp_path / "outputs"), **TINY)
        storage = LocalStorage(tmp_path / "outputs")
    Lease.for_experiment(storage, f"checkpoints/{experiment}/", experiment, owner, ttl=3600).acquire()
    lease_before = storage.get_bytes(f"checkpoints/{experiment}/.lease.json")

    with pytest.raises(LeaseHeldError) as info:
        train(config)

    assert str(info.value).startswith(
        f"Experiment {experiment} is already being trained by flow run {owner.id} (trainer-7, pid 4242) (lease until "
    )
    assert "pick another --experiment-name or wait" in str(info.value)
    assert storage.get_bytes(f"checkpoints/{experiment}/.lease.json") == lease_before  # not touched
    assert not storage.exists(f"manifests/{experiment}/manifest.parquet")  # nothing of the holder's overwritten
    assert not list(storage.list(f"tensorboard/{experiment}/"))
