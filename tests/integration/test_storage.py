"""Both storage backends through the same tests; S3 errors translated against moto's real server."""

from __future__ import annotations

import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pokevq.errors import (
    BucketNotFoundError,
    ConfigError,
    ConnectError,
    CredentialsNotFoundError,
    ObjectNotFoundError,
    StorageError,
)
from pokevq.storage import FAST_FAIL, LocalStorage, S3Storage, parse_s3_uri, storage_for_uri
from pokevq.storage.local_server import free_port


@pytest.fixture(params=["s3", "local"])
def storage(request, tmp_path):
    if request.param == "s3":
        bucket = request.getfixturevalue("bucket")
        endpoint = request.getfixturevalue("moto_endpoint")
        return S3Storage(bucket, "us-east-1", endpoint_url=endpoint)
    return LocalStorage(tmp_path / "store")


def parts_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".part")]


# --- the common interface ----------------------------------------------------------


def test_put_get_head_exists(storage):
    data = b"\x89PNG fake frame bytes"
    storage.put_bytes("pokemon_frames/game1/episode1/frame_001.png", data)
    assert storage.get_bytes("pokemon_frames/game1/episode1/frame_001.png") == data
    info = storage.head("pokemon_frames/game1/episode1/frame_001.png")
    assert info is not None
    assert info.key == "pokemon_frames/game1/episode1/frame_001.png"
    assert info.size == len(data)
    assert info.etag
    assert storage.exists("pokemon_frames/game1/episode1/frame_001.png")
    assert not storage.exists("pokemon_frames/game1/episode1/frame_002.png")
    assert storage.head("pokemon_frames/game1/episode1/frame_002.png") is None


def test_put_overwrites_and_changes_etag(storage):
    storage.put_bytes("a/key.bin", b"first")
    first = storage.head("a/key.bin")
    time.sleep(0.01)
    storage.put_bytes("a/key.bin", b"second version")
    second = storage.head("a/key.bin")
    assert storage.get_bytes("a/key.bin") == b"second version"
    assert second.size == len(b"second version")
    assert second.etag != first.etag


def test_get_missing_key_raises_object_not_found(storage):
    with pytest.raises(ObjectNotFoundError, match="Object not found"):
        storage.get_bytes("nope/missing.png")


def test_list_with_prefix(storage):
    for key in ("frames/g1/e1/f1.png", "frames/g1/e2/f1.png", "frames2/other.png", "checkpoints/x.pt"):
        storage.put_bytes(key, key.encode())
    listed = sorted(info.key for info in storage.list("frames/"))
    assert listed == ["frames/g1/e1/f1.png", "frames/g1/e2/f1.png"]
    sizes = {info.key: info.size for info in storage.list("frames/")}
    assert sizes["frames/g1/e1/f1.png"] == len(b"frames/g1/e1/f1.png")
    everything = sorted(info.key for info in storage.list(""))
    assert everything == sorted(
        ["frames/g1/e1/f1.png", "frames/g1/e2/f1.png", "frames2/other.png", "checkpoints/x.pt"]
    )
    assert list(storage.list("absent/")) == []


def test_list_returns_every_key_past_one_page(storage):
    keys = [f"many/ep{i // 100}/frame_{i:05d}.png" for i in range(1530)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: storage.put_bytes(k, b"x"), keys))
    listed = [info.key for info in storage.list("many/")]
    assert len(listed) == 1530
    assert sorted(listed) == sorted(keys)


def test_delete(storage):
    storage.put_bytes("d/key.txt", b"bye")
    storage.delete("d/key.txt")
    assert not storage.exists("d/key.txt")
    with pytest.raises(ObjectNotFoundError):
        storage.get_bytes("d/key.txt")
    storage.delete("d/key.txt")  # deleting twice is harmless, as on S3


def test_upload_and_download_file(storage, tmp_path):
    source = tmp_path / "local" / "checkpoint.pt"
    source.parent.mkdir()
    source.write_bytes(b"checkpoint-bytes" * 100)
    storage.upload_file(source, "checkpoints/exp/checkpoint_epoch_1.pt")
    assert storage.get_bytes("checkpoints/exp/checkpoint_epoch_1.pt") == source.read_bytes()

    target = tmp_path / "downloads" / "nested" / "ckpt.pt"
    storage.download_file("checkpoints/exp/checkpoint_epoch_1.pt", target)
    assert target.read_bytes() == source.read_bytes()
    assert parts_in(tmp_path / "downloads") == []


def test_failed_download_keeps_previous_file(storage, tmp_path):
    storage.put_bytes("ok.bin", b"good content")
    target = tmp_path / "dl" / "file.bin"
    storage.download_file("ok.bin", target)
    assert target.read_bytes() == b"good content"
    with pytest.raises(ObjectNotFoundError):
        storage.download_file("missing.bin", target)
    assert target.read_bytes() == b"good content"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_failed_download_creates_nothing(storage, tmp_path):
    target = tmp_path / "dl2" / "file.bin"
    with pytest.raises(ObjectNotFoundError):
        storage.download_file("missing.bin", target)
    assert not target.exists()
    assert parts_in(tmp_path / "dl2") == []


def test_copy(storage):
    storage.put_bytes("checkpoints/exp/checkpoint_epoch_3.pt", b"epoch three")
    storage.copy("checkpoints/exp/checkpoint_epoch_3.pt", "checkpoints/exp/checkpoint_latest.pt")
    assert storage.get_bytes("checkpoints/exp/checkpoint_latest.pt") == b"epoch three"
    assert storage.get_bytes("checkpoints/exp/checkpoint_epoch_3.pt") == b"epoch three"
    storage.put_bytes("checkpoints/exp/checkpoint_epoch_4.pt", b"epoch four")
    storage.copy("checkpoints/exp/checkpoint_epoch_4.pt", "checkpoints/exp/checkpoint_latest.pt")
    assert storage.get_bytes("checkpoints/exp/checkpoint_latest.pt") == b"epoch four"


def test_copy_missing_source_raises(storage):
    with pytest.raises(ObjectNotFoundError):
        storage.copy("no/such.pt", "dst.pt")
    assert not storage.exists("dst.pt")


# --- uri forms ----------------------------------------------------------------------


def test_s3_uri(bucket, moto_endpoint):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    assert storage.uri("checkpoints/e/checkpoint_latest.pt") == f"s3://{bucket}/checkpoints/e/checkpoint_latest.pt"
    assert storage.namespace == f"s3://{bucket}"


def test_local_uri_is_absolute_path(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    uri = storage.uri("checkpoints/e/checkpoint_latest.pt")
    assert Path(uri).is_absolute()
    assert Path(uri) == (tmp_path / "root" / "checkpoints" / "e" / "checkpoint_latest.pt").resolve()


# --- local safety ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["../escape.txt", "a/../../escape.txt", "/tmp/escape-abs.txt", "..\\escape.txt"])
def test_local_refuses_unsafe_keys(tmp_path, key):
    root = tmp_path / "root"
    storage = LocalStorage(root)
    with pytest.raises(StorageError, match="unsafe storage key"):
        storage.put_bytes(key, b"evil")
    with pytest.raises(StorageError, match="unsafe storage key"):
        storage.get_bytes(key)
    source = tmp_path / "src.bin"
    source.write_bytes(b"evil")
    with pytest.raises(StorageError, match="unsafe storage key"):
        storage.upload_file(source, key)
    outside = sorted(p.name for p in tmp_path.rglob("*") if root not in p.parents and p != root)
    assert outside == ["src.bin"]
    assert not Path("/tmp/escape-abs.txt").exists()


def test_local_list_hides_partial_files(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    storage.put_bytes("a/frame.png", b"x")
    (tmp_path / "root" / "a" / ".frame2.png.abc.part").write_bytes(b"half")
    assert [info.key for info in storage.list("")] == ["a/frame.png"]


def test_local_list_of_missing_root_is_empty(tmp_path):
    assert list(LocalStorage(tmp_path / "nothing-here").list("")) == []


# --- S3 error translation against the real server ---------------------------------


def test_missing_bucket(moto_endpoint):
    storage = S3Storage("pokevq-no-such-bucket-xyz", "us-east-1", endpoint_url=moto_endpoint)
    for action in (
        lambda: storage.get_bytes("k"),
        lambda: storage.put_bytes("k", b"x"),
        lambda: list(storage.list("frames/")),
        lambda: storage.list_one("frames/"),
    ):
        with pytest.raises(BucketNotFoundError) as info:
            action()
        message = str(info.value)
        assert message.startswith("S3 bucket")
        assert "pokevq-no-such-bucket-xyz" in message
        assert "does not exist" in message


def test_a_check_gives_up_after_four_attempts_within_seconds():
    """Validation's checks (pokevq.storage.FAST_FAIL) make 4 attempts, as docs/reliability.md says, then fail in
    one line.

    The endpoint accepts each connection, reads the request and resets it: every attempt is counted.
    """
    server = socket.create_server(("127.0.0.1", 0))
    attempts: list[int] = []

    def answer_with_a_reset() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            attempts.append(len(connection.recv(65536)))
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    threading.Thread(target=answer_with_a_reset, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    storage = S3Storage("b", "us-east-1", endpoint_url=endpoint, **FAST_FAIL)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectError) as info:
            storage.list_one("frames/")
    finally:
        server.close()
    assert time.monotonic() - started < 10
    assert len(attempts) == 4 and all(attempts), attempts  # 4 whole requests: the first and 3 retries
    assert str(info.value).startswith(f"Unable to connect to S3 at {endpoint}")


def test_endpoint_down_on_download(tmp_path):
    port = free_port()
    storage = S3Storage("b", "us-east-1", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
    target = tmp_path / "x.bin"
    with pytest.raises(ConnectError, match=f"Unable to connect to S3 at http://127.0.0.1:{port}"):
        storage.download_file("k", target)
    assert list(tmp_path.iterdir()) == []


def test_no_credentials(monkeypatch, moto_endpoint, bucket):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    with pytest.raises(CredentialsNotFoundError) as info:
        storage.check_credentials()
    assert str(info.value).startswith("AWS credentials not found")
    assert "AWS_ACCESS_KEY_ID" in str(info.value)
    with pytest.raises(CredentialsNotFoundError, match="^AWS credentials not found"):
        storage.get_bytes("k")


def test_credentials_present(bucket, moto_endpoint):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    storage.check_credentials()  # passes, and the same client then reads and writes
    storage.put_bytes("probe", b"ok")
    assert storage.get_bytes("probe") == b"ok"


def test_s3_metadata_is_stored(bucket, moto_endpoint, s3_client, tmp_path):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    storage.upload_file(path, "meta/f.bin", metadata={"sha256": "deadbeef"})
    assert s3_client.head_object(Bucket=bucket, Key="meta/f.bin")["Metadata"] == {"sha256": "deadbeef"}


def test_s3_storage_requires_a_bucket():
    with pytest.raises(ConfigError, match="--s3-bucket"):
        S3Storage("", "us-east-1")


# --- URIs -------------------------------------------------------------------------------


def test_storage_for_s3_uri():
    storage, key = storage_for_uri(
        "s3://my-bucket/checkpoints/exp1/checkpoint_latest.pt", region="eu-west-1", endpoint_url="http://e:1"
    )
    assert isinstance(storage, S3Storage)
    assert storage.bucket == "my-bucket"
    assert storage.region == "eu-west-1"
    assert storage.endpoint_url == "http://e:1"
    assert key == "checkpoints/exp1/checkpoint_latest.pt"


def test_storage_for_local_path(tmp_path):
    path = tmp_path / "outputs" / "checkpoint_latest.pt"
    path.parent.mkdir()
    path.write_bytes(b"ckpt")
    storage, key = storage_for_uri(str(path))
    assert isinstance(storage, LocalStorage)
    assert key == "checkpoint_latest.pt"
    assert storage.get_bytes(key) == b"ckpt"


def test_storage_for_bucket_only_uri_is_refused():
    with pytest.raises(ConfigError, match="names no object"):
        storage_for_uri("s3://just-a-bucket")


def test_parse_s3_uri():
    assert parse_s3_uri("s3://bucket/a/b.pt") == ("bucket", "a/b.pt")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")


@pytest.mark.parametrize("uri", ["http://x", "s3://", "bucket/key"])
def test_parse_s3_uri_rejects(uri):
    with pytest.raises(ConfigError, match="not an S3 URI"):
        parse_s3_uri(uri)
