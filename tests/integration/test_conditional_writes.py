"""Conditional writes on the storage interface, on S3 (moto over HTTP) and on a local directory.

They are what lets two runs share one object safely: the experiment's lease is built on them alone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from pokevq.errors import ObjectNotFoundError, PreconditionFailedError
from pokevq.run.lease import Lease, LeaseHeldError, LeaseOwner
from pokevq.storage import LocalStorage, S3Storage, Storage
from pokevq.storage.base import operations


@pytest.fixture(params=["s3", "local"])
def storage(request, tmp_path) -> Storage:
    if request.param == "s3":
        return S3Storage(request.getfixturevalue("bucket"), "us-east-1", request.getfixturevalue("moto_endpoint"))
    return LocalStorage(tmp_path / "store")


def test_create_if_absent_wins_once(storage):
    token = storage.put_if_absent("exp/.lease.json", b"first")
    with pytest.raises(PreconditionFailedError):
        storage.put_if_absent("exp/.lease.json", b"second")
    assert storage.get_with_token("exp/.lease.json") == (b"first", token)


def test_replace_needs_the_current_token(storage):
    first = storage.put_if_absent("k", b"one")
    second = storage.put_if_match("k", b"two", first)
    assert second != first
    with pytest.raises(PreconditionFailedError):
        storage.put_if_match("k", b"three", first)  # stale: someone wrote since
    data, token = storage.get_with_token("k")
    assert (data, token) == (b"two", second)
    assert storage.put_if_match("k", b"three", token) != token
    assert storage.get_bytes("k") == b"three"


def test_replace_or_delete_of_a_gone_object_is_refused(storage):
    token = storage.put_if_absent("gone", b"x")
    storage.delete("gone")
    with pytest.raises(PreconditionFailedError):
        storage.put_if_match("gone", b"y", token)
    assert not storage.delete_if_match("gone", token)
    with pytest.raises(ObjectNotFoundError):
        storage.get_with_token("gone")


def test_delete_if_match_keeps_another_writers_version(storage):
    first = storage.put_if_absent("d", b"mine")
    storage.put_if_match("d", b"theirs", first)
    assert not storage.delete_if_match("d", first)
    assert storage.get_bytes("d") == b"theirs"
    _, current = storage.get_with_token("d")
    assert storage.delete_if_match("d", current)
    assert not storage.exists("d")


def _race(contend, contenders: int = 8) -> list[str]:
    """Each contender's outcome, `contend(n)` started by all at once in threads: "won", "refused" or its crash."""
    outcomes: list[str] = ["did not finish"] * contenders
    start = threading.Barrier(contenders)

    def run(n: int) -> None:
        try:
            start.wait()
            contend(n)
            outcomes[n] = "won"
        except PreconditionFailedError:
            outcomes[n] = "refused"
        except BaseException as exc:  # noqa: BLE001 - asserted in the test's thread
            outcomes[n] = f"crashed: {exc!r}"

    threads = [threading.Thread(target=run, args=(n,)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def _one_winner(outcomes: list[str]) -> int:
    """The winner, when exactly one won and every other contender was refused (none crashed)."""
    assert sorted(outcomes) == ["refused"] * (len(outcomes) - 1) + ["won"], outcomes
    return outcomes.index("won")


@pytest.mark.parametrize("instances", ["shared", "one per thread"])
def test_local_threads_racing_to_create_one_winner(tmp_path, instances):
    shared = LocalStorage(tmp_path / "store")

    def claim(n: int) -> None:
        storage = shared if instances == "shared" else LocalStorage(tmp_path / "store")
        storage.put_if_absent("race/.lease.json", f"{n}".encode())

    winner = _one_winner(_race(claim))
    assert shared.get_bytes("race/.lease.json") == str(winner).encode()


def test_local_threads_racing_to_replace_one_winner(tmp_path):
    """Eight writers read the same token; only one replacement is accepted."""
    storage = LocalStorage(tmp_path / "store")
    token = storage.put_if_absent("k", b"start")

    def replace(n: int) -> None:
        LocalStorage(tmp_path / "store").put_if_match("k", f"writer {n}".encode(), token)

    winner = _one_winner(_race(replace))
    assert storage.get_bytes("k") == f"writer {winner}".encode()


def _claim_in_process(root: str, n: int, barrier, results) -> None:
    barrier.wait()
    try:
        LocalStorage(root).put_if_absent("race/.lease.json", f"{n}".encode())
        results.put(n)
    except PreconditionFailedError:
        results.put(None)
    except BaseException as exc:  # noqa: BLE001 - asserted in the test's process
        results.put(f"crashed: {exc!r}")


def test_local_processes_racing_to_create_one_winner(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=_claim_in_process, args=(str(tmp_path / "store"), n, barrier, results))
                 for n in range(2)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert sorted(outcomes, key=str) == sorted([None, next(o for o in outcomes if o is not None)], key=str)
    assert Path(tmp_path / "store" / "race" / ".lease.json").is_file()


def test_the_lease_uses_only_the_interface(storage):
    """Two owners of one experiment on either backend: the second is refused, then takes it once released."""
    first = Lease.for_experiment(storage, "checkpoints/exp/", "exp", LeaseOwner("run-a", "host", 1), race_delay=0)
    second = Lease.for_experiment(storage, "checkpoints/exp/", "exp", LeaseOwner("run-b", "host", 1), race_delay=0)
    assert first.acquire() is None
    with pytest.raises(LeaseHeldError):
        second.acquire()
    first.renew()
    assert first.release()
    assert second.acquire() is None
    assert storage.exists("checkpoints/exp/.lease.json")
    assert second.release()
    assert not storage.exists("checkpoints/exp/.lease.json")


def test_tokens_differ_after_two_quick_writes(storage):
    first = storage.put_if_absent("quick", b'{"expires_at": 1.0}')
    second = storage.put_if_match("quick", b'{"expires_at": 2.0}', first)
    assert first != second
    assert storage.get_with_token("quick")[1] == second
    if isinstance(storage, LocalStorage):  # the same mtime and size (one clock tick): the token still moved
        path = storage.path("quick")
        stat = path.stat()
        third = storage.put_if_match("quick", b'{"expires_at": 3.0}', second)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert path.stat().st_mtime_ns == stat.st_mtime_ns and path.stat().st_size == stat.st_size
        assert third != second and storage.get_with_token("quick")[1] == third
        with pytest.raises(PreconditionFailedError):
            storage.put_if_match("quick", b"late", second)


def test_s3_conditional_writes_carry_metadata_encryption_and_are_logged(bucket, moto_endpoint, s3_client):
    storage = S3Storage(bucket, "us-east-1", moto_endpoint, sse="AES256")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    operations.addHandler(handler)
    try:
        token = storage.put_if_absent("meta", b"x", metadata={"owner": "run-a"})
        with pytest.raises(PreconditionFailedError):
            storage.put_if_absent("meta", b"y")
        storage.put_if_match("meta", b"z", token, metadata={"owner": "run-b"})
    finally:
        operations.removeHandler(handler)
    head = s3_client.head_object(Bucket=bucket, Key="meta")
    assert head["Metadata"] == {"owner": "run-b"} and head["ServerSideEncryption"] == "AES256"
    assert [line.split(" s3://")[0] for line in lines] == ["S3 put_object"] * 3
    assert lines[0].endswith("meta ok") and " failed: " in lines[1] and lines[2].endswith("meta ok")


def test_a_lost_condition_is_not_retried_by_a_task():
    """Another writer won: the same write cannot succeed on a second try, unlike a dropped connection."""
    from pokevq.errors import StorageError
    from tasks.common import is_transient

    assert not is_transient(PreconditionFailedError("s3://b/k changed since it was read"))
    assert is_transient(StorageError("S3 put_object of s3://b/k failed: SlowDown"))
