"""The experiment's lease ("One run per experiment at a time" in the README) where it matters: in a real run
that outlives its lease's ttl many times over, and on a store that ignores conditional writes.

Every S3 request crosses a socket to moto's server, through the fault proxy (tests/helpers/s3_proxy.py) where a
test slows frames down or strips headers; the run is a real `pokevq train` process reporting to a real Prefect
API, and each second run is the real flow.
"""

from __future__ import annotations

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
from tests.helpers.runs import TINY_FLAGS, s3_train_config

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
    upload_tree(s3_client, bucket, synth_frames)
    monkeypatch.setenv("POKEVQ_LEASE_TTL", str(TTL))  # the first run (its env copies this) and the second runs
    monkeypatch.setenv("POKEVQ_TASK_RETRY_DELAYS", "0.2,0.5")
    # Frames come through a slow link with a 2-frame cache and no decoded-frame store: each epoch takes seconds,
    # several ttls, and only the lease's heartbeat renews it within an epoch.
    proxy.add_fault("delay", rf"^GET /{re.escape(bucket)}/pokemon_frames/", delay=0.25)
    args = [sys.executable, "-m", "pokevq", "train", "--use-s3", "--s3-bucket", bucket, "--s3-endpoint-url", proxy.url,
            "--experiment-name", "held", "--epochs", "3", "--batch-size", "4", "--num-workers", "0",
            "--learning-rate", "0.001", "--max-cache-size", "2", "--data-path", "cached",
            "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out"), "--no-fallback",
            *TINY_FLAGS]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "POKEVQ_DECODED_CACHE_BYTES": "0"}
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
