"""The experiment's lease ("One run per experiment at a time" in docs/reliability.md) where it matters: in a real run
that outlives its lease's ttl many times over, and on a store that ignores conditional writes.

Every S3 request crosses a socket to moto's server, through the fault proxy (tests/helpers/s3_proxy.py) where a
test slows frames down or strips headers; the run is a real `pokevq train` process reporting to a real Prefect
API, and each second run is the real flow.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from flows import train
from pokevq.errors import PreconditionFailedError
from pokevq.run.lease import Lease, LeaseHeldError, LeaseOwner, LeaseRecord
from pokevq.storage import S3Storage
from tests.helpers.frames import upload_tree
from tests.helpers.runs import ended, s3_train_config, slow_streaming_args

pytestmark = pytest.mark.faults

TTL = 2  # seconds: POKEVQ_LEASE_TTL's minimum is 1; the run renews every ttl/3


def _lease(s3_client, bucket: str, key: str) -> LeaseRecord | None:
    try:
        return LeaseRecord.from_bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3_client.exceptions.NoSuchKey:
        return None


def test_a_training_run_keeps_its_lease_for_many_ttls_and_every_second_run_is_refused(
    prefect_harness, fault_proxy, bucket, s3_client, moto_endpoint, synth_frames, tmp_path, monkeypatch
):
    from prefect.settings import PREFECT_API_URL

    proxy = fault_proxy
    monkeypatch.setenv("POKEVQ_LEASE_TTL", str(TTL))  # the first run (its env copies this) and the second runs
    monkeypatch.setenv("POKEVQ_TASK_RETRY_DELAYS", "0.2,0.5")
    # Small shards come through a slow link into a cache of a few of them: each epoch takes seconds, several ttls,
    # and only the lease's heartbeat renews it within an epoch.
    args = [sys.executable, "-m", "pokevq", "train", *slow_streaming_args(
        proxy, s3_client, bucket, synth_frames, "held", "--epochs", "3", "--learning-rate", "0.001",
        "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out"), delay=1.0, shard_bytes=2048)]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    key = "checkpoints/held/.lease.json"
    log = open(tmp_path / "first.log", "wb")
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    attempts: list[float] = []  # when each second run started (monotonic)
    records: list[LeaseRecord] = []  # the lease as read after each refusal
    try:
        deadline = time.monotonic() + 240
        while (first := _lease(s3_client, bucket, key)) is None:
            assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never took its lease"
            time.sleep(0.1)
        assert first.owner.pid == process.pid
        assert first.expires_at - first.acquired_at == pytest.approx(TTL)

        # Second runs of the experiment, one after another, for at least 3 ttls: each is refused.
        while not attempts or attempts[-1] - attempts[0] < 3 * TTL or len(attempts) < 3:
            assert process.poll() is None, "the first run ended before the second runs spanned 3 ttls"
            attempts.append(time.monotonic())
            config = s3_train_config(tmp_path / f"second-{len(attempts)}", bucket, moto_endpoint,
                                     experiment_name="held", num_epochs=1)
            with pytest.raises(LeaseHeldError, match=rf"^Experiment held is already being trained by flow run "
                                                     rf"\S+ \(\S+, pid {process.pid}\) \(lease until "):
                train(config)
            records.append(_lease(s3_client, bucket, key))
        assert process.poll() is None  # still training: the refusals spanned its lease, not its end
        proxy.clear_faults()  # the rest of the run at full speed
        assert process.wait(timeout=240) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()

    assert attempts[-1] - attempts[0] >= 3 * TTL
    # The lease stayed the first run's, acquired once and renewed: its expiry moved on with the run.
    assert all(record is not None and record.owner == first.owner for record in records)
    assert all(record.acquired_at == first.acquired_at for record in records)
    assert records[-1].expires_at >= first.expires_at + 2 * TTL
    assert _lease(s3_client, bucket, key) is None  # released when the run ended


def test_a_run_that_loses_its_lease_mid_epoch_stops_at_the_next_step_with_one_line_and_writes_nothing_more(
    prefect_harness, fault_proxy, bucket, s3_client, episode_frames, tmp_path
):
    from prefect.settings import PREFECT_API_URL

    proxy = fault_proxy
    # Shards through a slow link: about one shard a step, so the epoch's 20 steps take seconds.
    options = slow_streaming_args(proxy, s3_client, bucket, episode_frames, "lost", "--output-dir",
                                  str(tmp_path / "out"), delay=0.5)
    args = [sys.executable, "-m", "pokevq", "train", *options]
    frame_log = tmp_path / "frames.log"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "POKEVQ_LEASE_TTL": "3",  # renewed every 1 s
           "POKEVQ_FRAME_LOG": str(frame_log)}
    output = tmp_path / "run.log"
    key = "checkpoints/lost/.lease.json"

    def steps() -> list[int]:
        return [int(line.split()[1]) for line in frame_log.read_text().splitlines()] if frame_log.exists() else []

    with open(output, "wb") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while len(set(steps())) < 2:  # training is under way
            assert process.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.05)
        # Another run takes the experiment over (as after this run's lease expired): its lease replaces ours.
        other = LeaseOwner(id="other-run", hostname="elsewhere", pid=1, flow_run_id="other-run")
        now = time.time()
        record = LeaseRecord(experiment="lost", owner=other, acquired_at=now, expires_at=now + 3600)
        etag = s3_client.put_object(Bucket=bucket, Key=key, Body=record.to_bytes())["ETag"]
        taken_at, seen = max(steps()), len(proxy.seen)
        assert process.wait(timeout=120) == 1
    finally:
        console, errors = ended(process, output)
    assert errors == ["Error: Lost the lease on experiment lost: it is now held by flow run other-run (elsewhere, "
                      "pid 1). This run stops so two runs never write the same checkpoints."], console[-3000:]
    assert "Traceback" not in console
    # It stopped at the step after its heartbeat (every 1 s) saw the takeover, before its epoch ended (20 steps;
    # how many steps a heartbeat spans depends on the machine's load, so the bound is the epoch, not a count).
    assert max(steps()) < 20 and "Epoch 1/1:" not in console, (taken_at, max(steps()))
    # A renewal that read our old lease just before the takeover may still send its PUT: it carries that
    # lease's ETag in If-Match, so the store refuses it (412) and it writes nothing.
    written = [f"{method} {path}" for method, path, headers in proxy.seen[seen:]
               if method in ("PUT", "POST", "DELETE") and "/checkpoints/lost/" in path
               and headers.get("if-match", etag) == etag]
    assert written == [], written  # no checkpoint, and the other run's lease neither renewed nor deleted
    assert _lease(s3_client, bucket, key) == record


def test_lease_race_through_a_store_that_ignores_conditional_writes_has_one_winner(
    fault_proxy, bucket, s3_client
):
    proxy = fault_proxy
    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    assert not storage.atomic_conditions  # so the lease re-reads after writing

    # Through the proxy as it is, the store honours If-None-Match; stripped, the condition never reaches it.
    storage.put_if_absent("probe", b"first")
    with pytest.raises(PreconditionFailedError):
        storage.put_if_absent("probe", b"second")
    proxy.strip_headers = {"if-none-match", "if-match"}
    storage.put_if_absent("probe", b"third")  # the store overwrote: it ignored the (stripped) condition
    assert s3_client.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"third"

    # Hold every lease write a moment in the proxy: all contenders read "no lease" before any write lands, so
    # several writes succeed and only the re-read can tell who holds the lease.
    lease_put = rf"^PUT /{re.escape(bucket)}/checkpoints/race/\.lease\.json"
    proxy.add_fault("delay", lease_put, delay=0.5)
    contenders = 6
    barrier = threading.Barrier(contenders)
    outcomes: dict[str, str] = {}

    def contend(index: int) -> None:
        owner = LeaseOwner(id=f"run-{index}", hostname=f"host-{index}", pid=11, flow_run_id=f"run-{index}")
        lease = Lease.for_experiment(storage, "checkpoints/race/", "race", owner, ttl=600, race_delay=1.5)
        barrier.wait()
        try:
            lease.acquire()
            outcomes[owner.id] = "won"
        except LeaseHeldError:
            outcomes[owner.id] = "refused"

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    writes = [headers for method, path, headers in proxy.seen
              if method == "PUT" and re.match(lease_put, f"{method} {path}")]
    assert len(writes) >= 2, len(writes)  # a real race: more than one contender's write reached the store
    assert all(headers.get("if-none-match") == "*" for headers in writes)  # sent by the client, stripped after
    assert sorted(outcomes.values()) == ["refused"] * (contenders - 1) + ["won"], outcomes
    winner = next(name for name, outcome in outcomes.items() if outcome == "won")
    assert _lease(s3_client, bucket, "checkpoints/race/.lease.json").owner.id == winner


def test_an_unreadable_lease_blocks_the_experiment_for_a_ttl_with_one_line_then_is_taken_over(
    prefect_harness, bucket, s3_client, moto_endpoint, synth_frames, tmp_path
):
    upload_tree(s3_client, bucket, synth_frames)
    key = "checkpoints/garbled/.lease.json"
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"\x00not a lease{")
    before = {item["Key"]: item["ETag"] for item in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    # Written just now: whoever wrote it may still be training, so the run stops before writing anything.
    with pytest.raises(LeaseHeldError) as refused:
        train(s3_train_config(tmp_path, bucket, moto_endpoint, experiment_name="garbled", num_epochs=1))
    message = str(refused.value)
    assert "\n" not in message
    assert re.match(rf"^The lease s3://{bucket}/{re.escape(key)} of experiment garbled is unreadable \(.+\) and was "
                    r"written at \S+, less than POKEVQ_LEASE_TTL \(600 s\) ago: another run may hold it\. Wait until "
                    r"\S+, or delete it if no run trains garbled\.$", message), message
    assert {item["Key"]: item["ETag"] for item in s3_client.list_objects_v2(Bucket=bucket)["Contents"]} == before

    # A whole ttl after it was last written, it is free: taken over, and the lease is a readable one again.
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    owner = LeaseOwner(id="later-run", hostname="h", pid=1, flow_run_id="later-run")
    lease = Lease.for_experiment(storage, "checkpoints/garbled/", "garbled", owner, ttl=600, race_delay=0,
                                 clock=lambda: time.time() + 601)
    assert re.match(rf"^the lease s3://{bucket}/{re.escape(key)} was unreadable and last written at \S+, over 600 s "
                    "ago$", lease.acquire())
    assert _lease(s3_client, bucket, key).owner == owner


def test_a_release_the_store_refuses_warns_and_a_publish_after_the_lease_is_lost_writes_nothing(
    fault_proxy, bucket, s3_client, tmp_path, caplog
):
    from pokevq.layout import Layout
    from pokevq.run.lease import LeaseLostError
    from pokevq.train.checkpoint import sha256_file
    from pokevq.train.publish import publish_checkpoint

    storage = S3Storage(bucket, "us-east-1", endpoint_url=fault_proxy.url)
    layout = Layout(experiment="held")
    key = "checkpoints/held/.lease.json"
    lease = Lease.for_experiment(storage, layout.checkpoints, "held", LeaseOwner.current(), ttl=600, race_delay=0)
    lease.acquire()
    # The store answers the conditional delete with 412 (as S3 does when the lease changed meanwhile): a warning.
    fault_proxy.add_fault("refuse", rf"^DELETE /{bucket}/{re.escape(key)}", times=1)
    with caplog.at_level(logging.WARNING, logger="pokevq.run.lease"):
        assert lease.release() is False
    assert fault_proxy.injected_count("refuse") == 1
    refused = [r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING and "not released" in r.getMessage()]
    assert refused and refused[0].startswith(f"Lease s3://{bucket}/{key} not released: the store refused the "
                                             "conditional delete"), refused
    assert _lease(s3_client, bucket, key).owner == lease.owner  # still there: it expires by itself

    # A checkpoint is published only while the lease is this run's: once another run holds it, nothing is written.
    s3_client.delete_object(Bucket=bucket, Key=key)
    lease = Lease.for_experiment(storage, layout.checkpoints, "held", LeaseOwner.current(), ttl=600, race_delay=0)
    lease.acquire()
    path = tmp_path / "checkpoint_step_2.pt"
    path.write_bytes(b"weights")
    publish_checkpoint(storage, layout, path, 0, sha256_file(path), False, global_step=2, mid_epoch=True,
                       guard=lease.renew)
    other = LeaseRecord(experiment="held", owner=LeaseOwner(id="other", hostname="x", pid=1), acquired_at=time.time(),
                        expires_at=time.time() + 600)
    s3_client.put_object(Bucket=bucket, Key=key, Body=other.to_bytes())
    with pytest.raises(LeaseLostError):
        publish_checkpoint(storage, layout, path, 0, sha256_file(path), False, global_step=4, mid_epoch=True,
                           guard=lease.renew)
    listed = sorted(item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket)["Contents"])
    assert listed == [key, "checkpoints/held/checkpoint_latest.pt", "checkpoints/held/checkpoint_step_2.pt"]
