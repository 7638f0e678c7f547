"""Shards (`pokevq pack`), range reads, warming the local store and the concurrent manifest listing, on moto."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import torch

from pokevq.data import BucketReader, FrameSource, record, warm_units
from pokevq.data.cache import FrameCache
from pokevq.data.frames import decode_frame, decode_native
from pokevq.data.manifest import build_manifest, index_frames, split_by_episode
from pokevq.data.pack import pack, parse_size
from pokevq.data.shards import INDEX_COLUMNS, ShardIndex, index_key, shards_prefix
from pokevq.storage import LocalStorage, ObjectInfo, S3Storage
from tests.helpers.frames import upload_tree
from tests.helpers.s3_proxy import FaultProxy

IMAGE_SIZE = (72, 80)


@pytest.fixture
def storage(bucket, moto_endpoint, s3_client, synth_frames):
    upload_tree(s3_client, bucket, synth_frames, "pokemon_frames/")
    return S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)


@pytest.fixture
def proxy(fault_proxy):
    return fault_proxy


def frame_gets(proxy: FaultProxy) -> list[tuple[str, str | None]]:
    """(path, Range header) of every GET of an object under pokemon_frames/."""
    return [(path, headers.get("range")) for method, path, headers in proxy.seen
            if method == "GET" and "/pokemon_frames/" in path and "list-type" not in path]


# ----------------------------------------------------------------------------- pack


def test_pack_round_trip_every_frame_identical(storage, s3_client):
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.0)
    result = pack(storage, "pokemon_frames", shard_bytes=16 * 1024, threads=4)
    assert result.frames == len(manifest) == 24
    assert result.shards >= 2  # 24 frames of ~2 KB in 16 KiB shards
    assert all(key.startswith("pokemon_frames/_shards/") and key.endswith(".tar") for key in result.shard_keys)

    index = pd.read_parquet(io.BytesIO(storage.get_bytes(index_key("pokemon_frames"))))
    assert list(index.columns) == INDEX_COLUMNS
    assert index["key"].tolist() == manifest["key"].tolist()  # natural order: episodes stay together
    packed_bytes = 0
    for row in index.itertuples():
        original = storage.get_bytes(row.key)
        assert row.size == len(original)
        assert row.etag == manifest.loc[manifest["key"] == row.key, "etag"].item()
        stored = storage.get_range(row.shard, row.offset, row.offset + row.length)
        packed_bytes += len(stored)
        # Stored decoded: pixel for pixel the PNG as training decodes it, at its own size and resized.
        assert record.is_record(stored) and np.array_equal(decode_native(stored), decode_native(original))
        assert torch.equal(decode_frame(stored, IMAGE_SIZE), decode_frame(original, IMAGE_SIZE))
    assert packed_bytes <= index["size"].sum()  # no larger than the PNGs

    # Each shard is a plain tar: members are the keys relative to the prefix plus `.pvqf`, at the indexed offsets.
    for shard in result.shard_keys:
        with tarfile.open(fileobj=io.BytesIO(storage.get_bytes(shard))) as tar:
            for member in tar.getmembers():
                assert member.name.endswith(record.SUFFIX)
                row = index[index["key"] == "pokemon_frames/" + member.name[: -len(record.SUFFIX)]].iloc[0]
                assert (row.shard, row.offset, row.length) == (shard, member.offset_data, member.size)
                assert tar.extractfile(member).read() == storage.get_range(row.shard, row.offset,
                                                                           row.offset + row.length)


def test_manifest_and_split_ignore_the_shards(storage):
    before = index_frames(storage, "pokemon_frames", val_fraction=0.25, seed=3)
    pack(storage, "pokemon_frames", shard_bytes=16 * 1024)
    after = index_frames(storage, "pokemon_frames", val_fraction=0.25, seed=3)
    pd.testing.assert_frame_equal(before, after)


def test_full_repack_replaces_old_shards(storage):
    first = pack(storage, "pokemon_frames", shard_bytes=16 * 1024)
    second = pack(storage, "pokemon_frames", shard_bytes=64 * 1024, full=True)
    assert second.removed == first.shards
    remaining = [info.key for info in storage.list(shards_prefix("pokemon_frames")) if info.key.endswith(".tar")]
    assert sorted(remaining) == sorted(second.shard_keys)


def test_parse_size():
    assert parse_size("128MB") == 128_000_000
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("1.5k") == 1500
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size("lots")
    with pytest.raises(ValueError):
        parse_size("12")


def test_cli_pack(storage, moto_endpoint, capsys):
    from pokevq.cli import main

    code = main(["pack", "--s3-bucket", storage.bucket, "--s3-endpoint-url", moto_endpoint,
                 "--frames-dir", "pokemon_frames", "--shard-size", "8KiB", "--threads", "4"])
    assert code == 0
    assert "Packed 24 frames" in capsys.readouterr().out
    assert ShardIndex.load(storage, "pokemon_frames") is not None


# ----------------------------------------------------------------------------- range reads


def test_get_range_on_both_backends(storage, synth_frames):
    data = storage.get_bytes("pokemon_frames/game1/episode1/frame_001.png")
    assert storage.get_range("pokemon_frames/game1/episode1/frame_001.png", 8, 24) == data[8:24]
    assert storage.get_range("pokemon_frames/game1/episode1/frame_001.png", 5, 5) == b""
    local = LocalStorage(synth_frames)
    assert local.get_range("game1/episode1/frame_001.png", 8, 24) == data[8:24]
    assert local.get_range("game1/episode1/frame_001.png", len(data) - 3, len(data) + 10) == data[-3:]


# ----------------------------------------------------------------------------- the data path on shards


def _warm(via, tmp_path, val_fraction=0.25):
    manifest = index_frames(via, "pokemon_frames", val_fraction=val_fraction, seed=0)
    source = FrameSource(via, FrameCache(tmp_path / "cache"))
    path = BucketReader.decide(manifest, source, max_bytes=None)
    return manifest, source, path


def test_warm_cache_reads_each_shard_whole_once(storage, moto_endpoint, proxy, tmp_path):
    result = pack(storage, "pokemon_frames", shard_bytes=16 * 1024)
    via = S3Storage(storage.bucket, "us-east-1", endpoint_url=proxy.url)
    manifest, source, path = _warm(via, tmp_path)
    assert path.fits and path.packed == 24
    proxy.seen.clear()
    stats = warm_units(path, manifest, source, IMAGE_SIZE, progress=False)
    # A shard holding frames of both splits is read for the training frames and kept for the validation ones.
    assert stats["misses"] + stats["hits"] == stats["from_shards"] == 24 and stats["misses"] >= 12
    gets = frame_gets(proxy)
    assert all("/_shards/" in path for path, _ in gets)  # not one frame object was read
    # Each shard whole, once.
    assert sorted(path.rsplit("/", 1)[-1] for path, _ in gets) == sorted(k.rsplit("/", 1)[-1]
                                                                         for k in result.shard_keys)
    train = manifest[manifest["split"] == "train"]
    proxy.seen.clear()
    loader = path.loader(train, source, IMAGE_SIZE, batch_size=5, seed=0, shuffle=True, num_workers=0,
                         pin_memory=False)
    loader.set_epoch(1)
    batches = list(loader)
    assert frame_gets(proxy) == [] and sum(b.hits for b in batches) == len(train)
    for batch in batches:  # the decoded images are the frames themselves
        for key, image in zip(batch.keys, batch.images):
            assert torch.equal(image, decode_frame(storage.get_bytes(key), IMAGE_SIZE))


def test_changed_frame_is_read_from_its_own_object(storage, s3_client, proxy, tmp_path, synth_frames):
    pack(storage, "pokemon_frames", shard_bytes=16 * 1024)
    changed = "pokemon_frames/game2/episode1/frame_003.png"
    new_bytes = (synth_frames / "game1" / "episode2" / "frame_005.png").read_bytes()
    s3_client.put_object(Bucket=storage.bucket, Key=changed, Body=new_bytes)  # new ETag: the shard is stale
    via = S3Storage(storage.bucket, "us-east-1", endpoint_url=proxy.url)
    manifest, source, path = _warm(via, tmp_path, val_fraction=0.0)
    assert path.packed == 23
    loader = path.loader(manifest, source, IMAGE_SIZE, batch_size=24, seed=0, shuffle=False, num_workers=0,
                         pin_memory=False)
    proxy.seen.clear()
    loader.set_epoch(1)
    (batch,) = list(loader)
    assert [path for path, _ in frame_gets(proxy) if "/_shards/" not in path] == [f"/{storage.bucket}/{changed}"]
    image = batch.images[batch.keys.index(changed)]
    assert torch.equal(image, decode_frame(new_bytes, IMAGE_SIZE))  # the new frame, not the packed one


# ----------------------------------------------------------------------------- concurrent listing


TRICKY = [
    "f/top.png", "f/g1/direct_3.png", "f/g1/ep/frame_1.png", "f/g1/ep/frame_10.png", "f/g1/ep/frame_2.png",
    "f/g1/ep/deeper/frame_4.png", "f/G1/Ep/frame_1.png", "f/g10/ep01/frame_1.png", "f/g10/ep1/frame_1.png",
    "f/g2/a b/x&y_1.png", "f/g2/é/ü+2.png", "f/g2/ep/.DS_Store", "f/g2/ep/notes.txt", "f/g1/",
    "f/_shards/index.parquet",
    "f-other/g1/ep/frame_1.png",
] + [f"f/g3/ep1/frame_{n}.png" for n in range(1, 1101)]  # more than one page of 1,000 in an episode


def test_concurrent_index_equals_one_sequential_listing(bucket, moto_endpoint):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: storage.put_bytes(k, k.encode()), TRICKY))
    concurrent = index_frames(storage, "f", val_fraction=0.3, seed=1, threads=4)
    sequential = build_manifest(storage.list("f/"), "f")
    assert concurrent["key"].tolist() == sequential["key"].tolist()
    for column in ("game", "episode", "frame", "size", "etag"):
        assert concurrent[column].tolist() == sequential[column].tolist(), column
    assert (concurrent["last_modified"] == sequential["last_modified"]).all()
    assert concurrent["split"].tolist() == split_by_episode(sequential, 0.3, 1)["split"].tolist()
    assert "f/_shards/index.parquet" not in set(concurrent["key"])


def test_listing_pages_parse_like_botocore(bucket, moto_endpoint):
    """The cheap ListObjectsV2 parser returns what botocore's own parser returns."""
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: storage.put_bytes(k, k.encode()), TRICKY))
    for prefix, delimiter in (("f/", None), ("f/", "/"), ("", None), ("f/g2/", "/"), ("f/g3/ep1/", None)):
        expected_keys, expected_prefixes = [], []
        extra = {"Delimiter": delimiter} if delimiter else {}
        for page in storage.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, **extra):
            expected_keys += [(o["Key"], o["Size"], o["ETag"].strip('"'), o["LastModified"])
                              for o in page.get("Contents", [])]
            expected_prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        got_keys, got_prefixes = [], []
        for page in storage.list_pages(prefix, delimiter):
            got_keys += [(k, s, e, pd.Timestamp(t).to_pydatetime()) for k, s, e, t in
                         zip(page.keys, page.sizes, page.etags, page.last_modified)]
            got_prefixes += page.prefixes
        assert got_keys == expected_keys
        assert got_prefixes == expected_prefixes


def test_build_manifest_keeps_natural_order_and_listing_order_for_ties():
    now = datetime(2024, 1, 1, tzinfo=UTC)
    keys = ["p/g/e/frame_10.png", "p/g/e/frame_9.png", "p/g/e/Frame_09.png", "p/g/e/frame_9b.png", "p/g/e/frame_2.png"]
    frame = build_manifest([ObjectInfo(k, 1, "x", now) for k in keys], "p")
    assert frame["key"].tolist() == ["p/g/e/frame_2.png", "p/g/e/frame_9.png", "p/g/e/Frame_09.png",
                                     "p/g/e/frame_9b.png", "p/g/e/frame_10.png"]


def test_pack_is_incremental_new_and_changed_frames_only(storage, s3_client, synth_frames):
    first = pack(storage, "pokemon_frames", shard_bytes=16 * 1024)
    before = s3_client.head_object(Bucket=storage.bucket, Key=index_key("pokemon_frames"))["ETag"]
    again = pack(storage, "pokemon_frames", shard_bytes=16 * 1024)
    assert again.frames == 0 and again.indexed == 24  # nothing new: no shard and no index written
    assert s3_client.head_object(Bucket=storage.bucket, Key=index_key("pokemon_frames"))["ETag"] == before

    png = (synth_frames / "game1" / "episode1" / "frame_001.png").read_bytes()
    for name in ("frame_901.png", "frame_902.png"):
        s3_client.put_object(Bucket=storage.bucket, Key=f"pokemon_frames/game1/episode1/{name}", Body=png)
    changed = "pokemon_frames/game2/episode2/frame_003.png"
    s3_client.put_object(Bucket=storage.bucket, Key=changed, Body=png)
    s3_client.delete_object(Bucket=storage.bucket, Key="pokemon_frames/game2/episode2/frame_004.png")
    third = pack(storage, "pokemon_frames", shard_bytes=16 * 1024)
    assert third.frames == 3  # two new frames and the changed one
    assert third.indexed == 24 + 2 - 1
    index = pd.read_parquet(io.BytesIO(storage.get_bytes(index_key("pokemon_frames"))))
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.0)
    assert sorted(zip(index["key"], index["etag"].astype(str))) == sorted(zip(manifest["key"], manifest["etag"]))
    assert set(index.loc[index["key"] == changed, "shard"]) <= set(third.shard_keys)
    tars = {info.key for info in storage.list(shards_prefix("pokemon_frames")) if info.key.endswith(".tar")}
    assert tars == set(index["shard"])  # old shards still read are kept, and nothing else
    assert set(first.shard_keys) & tars  # the first pack's shards were not rewritten
    for row in index.itertuples():
        stored = storage.get_range(row.shard, row.offset, row.offset + row.length)
        assert np.array_equal(decode_native(stored), decode_native(storage.get_bytes(row.key)))
