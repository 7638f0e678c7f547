"""The streaming data path: buckets larger than the cache, read shard by shard from moto's S3 over HTTP."""

from __future__ import annotations

import io
import os
import threading
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from pokevq.data.cache import FrameCache
from pokevq.data.frames import decode_frame
from pokevq.data.manifest import index_frames
from pokevq.data.order import Position, group_units, rank_frames, worker_streams
from pokevq.data.pack import pack
from pokevq.data.reader import BucketReader
from pokevq.data.shard_cache import ShardCache, shard_file_name
from pokevq.data.shards import INDEX_COLUMNS, ShardIndex, ShardIndexError, index_key
from pokevq.data.source import FrameSource
from pokevq.errors import ConfigError
from pokevq.storage import S3Storage
from tests.helpers.frames import upload_tree
from tests.helpers.s3_proxy import FaultProxy  # noqa: F401 - the type of the proxy fixture

IMAGE = (72, 80)


@pytest.fixture
def proxy(fault_proxy):
    return fault_proxy


@pytest.fixture
def many_frames(episode_frames):
    return episode_frames


@pytest.fixture
def packed(bucket, s3_client, moto_endpoint, many_frames):
    """The frames in S3, packed into shards of about 24 KB (several frames each)."""
    upload_tree(s3_client, bucket, many_frames, "pokemon_frames/")
    direct = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    result = pack(direct, "pokemon_frames", shard_bytes=24 * 1024, threads=4)
    assert result.shards >= 6
    return result


def _manifest(storage) -> pd.DataFrame:
    return index_frames(storage, "pokemon_frames", val_fraction=0.0)


def _loader(manifest, storage, tmp_path, *, max_bytes=None, workers=0, batch=8, shuffle=True, seed=0):
    source = FrameSource(storage, FrameCache(tmp_path / "cache", max_items=4))
    path = BucketReader.decide(manifest, source, max_bytes=max_bytes)
    loader = path.loader(manifest, source, IMAGE, batch_size=batch, seed=seed, shuffle=shuffle,
                         num_workers=workers, pin_memory=False)
    return path, loader


def _epoch_keys(loader, epoch, position=None, on_batch=None) -> list[str]:
    loader.set_epoch(epoch, position)
    keys: list[str] = []
    for batch in loader:
        assert not batch.skipped, batch.skipped
        assert batch.images is not None and tuple(batch.images.shape[2:]) == IMAGE
        keys += batch.keys
        if on_batch is not None:
            on_batch(batch)
    return keys


def _shard_gets(proxy: FaultProxy) -> list[str]:
    return [path for method, path, _ in proxy.seen if method == "GET" and "/_shards/" in path and path.endswith(".tar")]


def _frame_gets(proxy: FaultProxy) -> list[str]:
    return [path for method, path, _ in proxy.seen
            if method == "GET" and "/pokemon_frames/" in path and path.endswith(".png") and "_shards" not in path]


# ------------------------------------------------------------------------------------------- plan


def test_plan_partitions_every_frame_once_over_ranks_and_workers():
    frames = 1003
    shard_of = (np.arange(frames) // 25).astype(np.int32)
    shard_of[-30:] = -1  # some frames are not packed
    units = group_units(shard_of, np.arange(frames))
    seen: list[int] = []
    batches = []
    for rank in range(2):
        mine = rank_frames(units, seed=3, epoch=5, rank=rank, world_size=2)
        streams = worker_streams(mine, 16, 3)
        batches.append(sum(-(-len(s) // 16) for s in streams))
        for stream in streams:
            seen += stream.tolist()
    assert batches[0] == batches[1]  # every rank runs as many batches
    assert len(seen) == len(set(seen)) == frames - frames % 2  # each frame once; one left over is dropped
    again = rank_frames(units, seed=3, epoch=5, rank=0, world_size=2)
    other = rank_frames(units, seed=3, epoch=6, rank=0, world_size=2)
    assert np.array_equal(again, rank_frames(units, seed=3, epoch=5, rank=0, world_size=2))
    assert not np.array_equal(again, other)


def test_position_gives_exactly_the_frames_left_whatever_the_new_worker_count():
    units = group_units(np.repeat(np.arange(10), 30).astype(np.int32), np.arange(300))
    frames = rank_frames(units, seed=0, epoch=1)
    first = worker_streams(frames, 8, 2)
    consumed = [3, 2]  # worker 0 delivered 3 batches, worker 1 two
    done = np.concatenate([first[0][:24], first[1][:16]])
    position = Position(1, 8, 1, [{"workers": 2, "consumed": consumed}])
    for workers in (1, 2, 3):
        left = np.concatenate(worker_streams(frames, 8, workers, position))
        assert sorted(np.concatenate([done, left]).tolist()) == list(range(300))
    same = worker_streams(frames, 8, 2, position)  # same worker count: each worker continues its own stream
    assert np.array_equal(same[0], first[0][24:]) and np.array_equal(same[1], first[1][16:])


def test_planning_a_million_frames_is_small():  # its speed is benchmarks/' to measure (the 10 s target)
    import tracemalloc

    n = 1_000_000
    shard_of = (np.arange(n) // 4000).astype(np.int32)
    tracemalloc.start()
    units = group_units(shard_of, np.arange(n) % 4000)
    mine = rank_frames(units, seed=0, epoch=1, rank=1, world_size=4)
    streams = worker_streams(mine, 64, 8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sum(len(s) for s in streams) == n // 4
    assert peak / n <= 200, f"{peak / n:.0f} bytes per frame"


# ----------------------------------------------------------------------------------- the data path


def test_packed_epoch_reads_whole_shards_each_once_and_delivers_every_frame_once(proxy, bucket, packed, tmp_path):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    manifest = _manifest(storage)
    _, loader = _loader(manifest, storage, tmp_path)
    proxy.seen.clear()
    episodes_per_batch: list[int] = []
    keys = _epoch_keys(loader, 1, on_batch=lambda b: episodes_per_batch.append(
        len({key.rsplit("/", 1)[0] for key in b.keys})))
    assert sorted(keys) == sorted(manifest["key"])  # every frame, once
    # Shards hold consecutive frames of one episode; the shuffle mixes several shards into each batch.
    assert np.mean(episodes_per_batch) >= 2.5, episodes_per_batch
    shard_gets = _shard_gets(proxy)
    assert len(shard_gets) == packed.shards == len(set(shard_gets))  # one read per shard, none twice
    assert not _frame_gets(proxy)  # never one request per frame
    requests = [m for m, p, _ in proxy.seen if m == "GET"]
    assert len(requests) <= packed.shards + 0.01 * len(manifest) + 1
    # The next epoch: another order, every shard already on disk (the limit holds them all).
    proxy.seen.clear()
    second = _epoch_keys(loader, 2)
    assert sorted(second) == sorted(keys) and second != keys
    assert not _shard_gets(proxy)


def test_packed_frames_cross_as_palette_indices_and_expand_to_the_decoded_frames(bucket, packed, moto_endpoint,
                                                                                 tmp_path):
    """With an accelerator the workers hand over the indices still packed (Game Boy frames: 2 bits a pixel, a
    quarter of a byte); the model's device unpacks and expands them to the same images."""
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    manifest = _manifest(storage)
    _, loader = _loader(manifest, storage, tmp_path)
    loader.dataset.options.expand_on_device = True  # what pin_memory (a CUDA device) sets
    loader.set_epoch(1)
    frames = 0
    for batch in loader:
        assert batch.images is None and batch.indices.dtype == torch.uint8 and batch.frame_hw == (144, 160)
        assert batch.bits == 2 and batch.indices.shape[1] == 144 * 160 // 4 and batch.palettes.shape[1] <= 4
        for key, image in zip(batch.keys, batch.pixels("cpu")):
            assert torch.equal(image, decode_frame(storage.get_bytes(key), IMAGE))
        frames += len(batch.keys)
    assert frames == len(manifest)



def test_game_boy_and_color_frames_in_one_batch_cross_a_byte_an_index_and_expand_to_their_decoded_frames(tmp_path):
    """2-bit and 8-bit frames cannot share one packing: that batch crosses unpacked, and still expands exactly."""
    from PIL import Image

    from pokevq.storage import LocalStorage

    rng = np.random.default_rng(0)
    shades = np.array([[15, 56, 15], [48, 98, 48], [139, 172, 15], [155, 188, 15]], dtype=np.uint8)
    colours = rng.integers(0, 256, size=(40, 3)).astype(np.uint8)  # a Game Boy Color screen's palettes
    for n in range(8):
        table = shades if n % 2 else colours
        path = tmp_path / "bucket" / "frames" / "game1" / "episode1" / f"frame_{n:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(table[rng.integers(0, len(table), size=(144, 160))], "RGB").save(path)
    storage = LocalStorage(tmp_path / "bucket")
    pack(storage, "frames", shard_bytes=1 << 20)
    manifest = index_frames(storage, "frames", val_fraction=0.0)
    _, loader = _loader(manifest, storage, tmp_path, batch=8)
    loader.dataset.options.expand_on_device = True
    loader.set_epoch(1)
    (batch,) = list(loader)
    assert batch.bits == 8 and tuple(batch.indices.shape) == (8, 144 * 160) and not batch.skipped
    for key, image in zip(batch.keys, batch.pixels("cpu")):
        assert torch.equal(image, decode_frame(storage.get_bytes(key), IMAGE))

def test_a_corrupt_packed_frame_is_skipped_and_counted_with_its_reason(bucket, packed, moto_endpoint, s3_client,
                                                                       tmp_path):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    manifest = _manifest(storage)
    index = ShardIndex.load(storage, "pokemon_frames").frame
    victim = index.iloc[5]
    shard = bytearray(storage.get_bytes(victim["shard"]))
    shard[int(victim["offset"]) + int(victim["length"]) - 3] ^= 0x01  # one bit of its pixels, on the disk it was read
    s3_client.put_object(Bucket=bucket, Key=victim["shard"], Body=bytes(shard))
    _, loader = _loader(manifest, storage, tmp_path, workers=1)
    loader.set_epoch(1)
    keys, skipped = [], []
    try:
        for batch in loader:
            keys += batch.keys
            skipped += batch.skipped
    finally:
        loader._iterator._shutdown_workers()
    assert skipped == [(victim["key"], "corrupt frame record (checksum mismatch)")]
    assert sorted(keys + [victim["key"]]) == sorted(manifest["key"])


def test_shard_cache_never_exceeds_its_limit(proxy, bucket, packed, tmp_path):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    manifest = _manifest(storage)
    largest = max(info.size for info in storage.list("pokemon_frames/_shards/") if info.key.endswith(".tar"))
    limit = 3 * largest  # about half the bucket's shards
    path, loader = _loader(manifest, storage, tmp_path, max_bytes=limit)
    cache_dir = tmp_path / "cache"
    samples: list[int] = []

    def sample(_batch) -> None:
        samples.append(sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file()))

    keys = _epoch_keys(loader, 1, on_batch=sample)
    assert sorted(keys) == sorted(manifest["key"])
    assert samples and max(samples) <= limit
    gets = _shard_gets(proxy)
    assert len(gets) == len(set(gets))  # even when it does not all fit, no shard is read twice in an epoch


def test_unpacked_bucket_fetches_frames_concurrently(proxy, bucket, s3_client, many_frames, tmp_path):
    upload_tree(s3_client, bucket, many_frames, "pokemon_frames/")
    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    manifest = _manifest(storage)
    proxy.add_fault("delay", r"GET /[^?]*\.png$", delay=0.05)
    _, loader = _loader(manifest, storage, tmp_path)
    keys = _epoch_keys(loader, 1)
    assert sorted(keys) == sorted(manifest["key"])
    assert proxy.max_inflight >= 16  # tens in flight, not one synchronous GET per item


def _epoch_images(loader, epoch) -> tuple[dict[str, torch.Tensor], int]:
    """Every frame of an epoch by key, and how many were read from a local copy (cache hits)."""
    loader.set_epoch(epoch)
    images, hits = {}, 0
    for batch in loader:
        assert not batch.skipped, batch.skipped
        images.update(zip(batch.keys, batch.images))
        hits += batch.hits
    return images, hits


def test_unpacked_bucket_is_decoded_once_into_local_units_within_the_byte_limit(
    proxy, bucket, s3_client, many_frames, tmp_path
):
    upload_tree(s3_client, bucket, many_frames, "pokemon_frames/")
    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    manifest = _manifest(storage)
    limit = int(manifest["size"].sum())  # the PNGs' bytes: more frames than --max-cache-size, but this fits decoded
    # 2 workers: the chunk's frames are split between them, differently each epoch; its unit is kept whole.
    path, loader = _loader(manifest, storage, tmp_path, max_bytes=limit, workers=2)
    assert path.keep_loose
    first, hits = _epoch_images(loader, 1)
    # Each frame fetched once: a worker that needs a chunk another is fetching waits and reads its unit.
    assert hits < len(manifest) and len(_frame_gets(proxy)) == len(manifest)
    seen = len(proxy.seen)
    second, hits = _epoch_images(loader, 2)
    # Epoch 2 reads the decoded units: no request at all, every frame a hit, the same pixels as the PNGs.
    assert proxy.seen[seen:] == [] and hits == len(manifest)
    assert sorted(second) == sorted(first) == sorted(manifest["key"])
    for key in manifest["key"]:
        png = (many_frames / key.removeprefix("pokemon_frames/")).read_bytes()
        assert torch.equal(second[key], decode_frame(png, IMAGE)), key
    on_disk = sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*") if f.is_file())
    assert 0 < on_disk <= limit

    # A damaged unit on disk is fetched and written again, never trained from.
    for unit in (tmp_path / "cache").rglob("*.shard"):
        unit.write_bytes(unit.read_bytes()[:100])
    before = len(_frame_gets(proxy))
    again, _ = _epoch_images(loader, 3)
    assert len(_frame_gets(proxy)) - before == len(manifest)
    assert all(torch.equal(again[key], second[key]) for key in manifest["key"])
    seen = len(proxy.seen)
    _, hits = _epoch_images(loader, 4)
    assert proxy.seen[seen:] == [] and hits == len(manifest)

    # A frame replaced in the bucket has a new ETag: its unit is not read again; the new pixels are trained.
    key = manifest["key"].iloc[5]
    other = (many_frames / manifest["key"].iloc[40].removeprefix("pokemon_frames/")).read_bytes()
    s3_client.put_object(Bucket=bucket, Key=key, Body=other)
    manifest = _manifest(storage)
    _, loader = _loader(manifest, storage, tmp_path, max_bytes=limit, workers=2)
    before = len(_frame_gets(proxy))
    third, hits = _epoch_images(loader, 5)
    assert torch.equal(third[key], decode_frame(other, IMAGE))
    assert len(_frame_gets(proxy)) - before == len(manifest)  # its chunk (here every frame) is fetched again
    assert any(path.endswith(key.split("/", 1)[1]) for path in _frame_gets(proxy)[before:])


def test_unpacked_bucket_that_does_not_fit_decoded_is_fetched_each_epoch_and_says_to_pack(
    proxy, bucket, s3_client, many_frames, tmp_path, caplog
):
    upload_tree(s3_client, bucket, many_frames, "pokemon_frames/")
    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    manifest = _manifest(storage)
    with caplog.at_level("WARNING", logger="pokevq.data.reader"):
        path, loader = _loader(manifest, storage, tmp_path, max_bytes=int(manifest["size"].sum()) // 4)
    assert not path.keep_loose
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "Run `pokevq pack`" in warnings[0], warnings
    for epoch in (1, 2):
        before = len(_frame_gets(proxy))
        _epoch_images(loader, epoch)
        assert len(_frame_gets(proxy)) - before == len(manifest)
    assert not [f for f in (tmp_path / "cache").rglob("*.shard")]  # nothing kept that would be evicted anyway


def test_shard_read_cut_mid_body_is_retried_and_no_frame_is_skipped(proxy, bucket, packed, tmp_path):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    manifest = _manifest(storage)
    proxy.add_fault("reset", r"GET /[^?]*/_shards/.*\.tar", times=2)
    _, loader = _loader(manifest, storage, tmp_path)
    keys = _epoch_keys(loader, 1)  # asserts no batch skipped a frame
    assert proxy.injected_count("reset") == 2
    assert sorted(keys) == sorted(manifest["key"])
    assert not _frame_gets(proxy)  # retried as shard reads, not degraded to per-frame reads


def test_shard_deleted_mid_epoch_falls_back_to_the_frames_own_objects(proxy, bucket, packed, tmp_path, s3_client):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    manifest = _manifest(storage)
    _, loader = _loader(manifest, storage, tmp_path, batch=4)
    deleted: list[str] = []

    def delete_unread_shard(_batch) -> None:
        if deleted:
            return
        read = {p.split(f"/{bucket}/", 1)[1] for p in _shard_gets(proxy)}
        unread = [k for k in packed.shard_keys if k not in read]
        s3_client.delete_object(Bucket=bucket, Key=unread[-1])
        deleted.append(unread[-1])

    keys = _epoch_keys(loader, 1, on_batch=delete_unread_shard)
    assert deleted
    assert sorted(keys) == sorted(manifest["key"])  # nothing skipped, nothing repeated
    assert _frame_gets(proxy)  # the deleted shard's frames came from their own objects


def test_two_workers_split_the_epoch_and_a_resume_continues_exactly(proxy, bucket, packed, tmp_path):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    manifest = _manifest(storage)
    _, loader = _loader(manifest, storage, tmp_path, workers=2, batch=4)
    try:
        loader.set_epoch(3)
        tracker = loader.tracker(3)
        before: list[str] = []
        for number, batch in enumerate(loader):
            tracker.advance(batch)
            before += batch.keys
            if number == 6:
                break
        position = tracker.position()
        after = _epoch_keys(loader, 3, position)
    finally:
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
    assert sum(position["segments"][-1]["consumed"]) == 7
    assert Counter(before + after) == Counter(manifest["key"].tolist())  # one epoch: none repeated, none lost


# ------------------------------------------------------------------------------------ bad input


def test_cache_limit_smaller_than_one_shard_is_a_clear_error(bucket, packed, moto_endpoint, tmp_path):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    manifest = _manifest(storage)
    source = FrameSource(storage, FrameCache(tmp_path / "cache", max_items=4))
    with pytest.raises(ConfigError) as raised:
        BucketReader.decide(manifest, source, max_bytes=4096)
    message = str(raised.value)
    assert "--max-cache-bytes" in message and "smaller than one shard" in message and "\n" not in message


@pytest.mark.parametrize(
    "change, words",
    [
        ({"offset": -5}, "outside any shard"),
        ({"shard": "pokemon_frames/_shards/../../../etc/passwd"}, "climbs out"),
        ({"key": "pokemon_frames/../../outside.png"}, "climbs out"),
        ({"shard": "elsewhere/shard-00000.tar"}, "is not under"),
    ],
)
def test_hostile_shard_index_rows_are_refused_and_nothing_is_written_outside_the_cache(
    bucket, packed, moto_endpoint, s3_client, tmp_path, change, words
):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    manifest = _manifest(storage)
    index = pd.read_parquet(io.BytesIO(storage.get_bytes(index_key("pokemon_frames"))))
    for column, value in change.items():
        index.loc[3, column] = value
    buffer = io.BytesIO()
    index[INDEX_COLUMNS].to_parquet(buffer, index=False)
    storage.put_bytes(index_key("pokemon_frames"), buffer.getvalue())
    before = set(os.listdir(tmp_path))
    source = FrameSource(storage, FrameCache(tmp_path / "cache", max_items=4))
    with pytest.raises(ShardIndexError) as raised:
        BucketReader.decide(manifest, source, max_bytes=None)
    assert words in str(raised.value) and "pokevq pack" in str(raised.value)
    assert set(os.listdir(tmp_path)) - before <= {"cache"}
    assert not list((tmp_path / "cache").rglob("*.shard"))


def test_shard_cache_is_shared_by_threads_without_downloading_twice(tmp_path):
    cache = ShardCache(tmp_path / "shards", 10_000)
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()
    data = bytes(range(256)) * 8

    def fetch(start: int, end: int) -> bytes:
        with lock:
            calls.append((start, end))
        return data[start:end]

    read: list[bytes | BaseException] = []

    def reader() -> None:
        try:
            opened = cache.open("ns", "shard-a", 2000, fetch)
            read.append(opened.view(100, 5))
            opened.close()
        except BaseException as exc:  # noqa: BLE001 - asserted in the test's thread
            read.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read == [data[100:105]] * 8  # every thread read the shard's bytes
    assert calls == [(0, 2000)]
    assert cache.used_bytes() == 2000


def _on_disk(opened) -> bool:
    """Whether a shard open from the cache is still a file in it (an evicted file stays readable on Linux)."""
    return opened.fd >= 0 and os.fstat(opened.fd).st_nlink > 0


def test_a_shard_being_read_is_never_evicted(tmp_path):
    size = 4096
    data = os.urandom(size)
    # Two workers' caches over one directory, room for two shards.
    first, second = (ShardCache(tmp_path / "shards", 2 * size) for _ in range(2))
    read = first.open("ns", "read", size, lambda a, b: data[a:b])  # the least recently used, and in use
    second.open("ns", "done", size, lambda a, b: data[a:b]).close()
    newer = second.open("ns", "newer", size, lambda a, b: data[a:b])  # room made by evicting "done", not "read"
    assert _on_disk(read) and _on_disk(newer)
    assert not (tmp_path / "shards" / shard_file_name("ns", "done", size)).exists()
    crowded = second.open("ns", "crowded", size, lambda a, b: data[a:b])  # all the room is being read: memory
    assert crowded.fd < 0 and crowded.view(0, size) == data
    assert _on_disk(read) and read.view(0, size) == data
    assert second.used_bytes() <= 2 * size
    read.close()
    later = second.open("ns", "later", size, lambda a, b: data[a:b])  # once it is not read, it may go
    assert _on_disk(later) and not (tmp_path / "shards" / shard_file_name("ns", "read", size)).exists()
    for opened in (newer, crowded, later):
        opened.close()


def test_shard_index_validation_accepts_a_real_pack(bucket, packed, moto_endpoint):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    index = ShardIndex.load(storage, "pokemon_frames")
    assert index is not None and len(index) == len(_manifest(storage))


def test_trainer_epoch_over_a_bucket_larger_than_the_cache_reads_each_shard_about_once(
    proxy, bucket, packed, tmp_path, one_thread_seeded
):
    from pokevq.config import TrainConfig
    from pokevq.train.trainer import Trainer

    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    manifest = _manifest(storage)
    largest = max(info.size for info in storage.list("pokemon_frames/_shards/") if info.key.endswith(".tar"))
    limit = 6 * largest
    source = FrameSource(storage, FrameCache(tmp_path / "cache", max_items=8, max_bytes=limit))
    config = TrainConfig(device="cpu", num_workers=2, batch_size=8, max_cache_size=8, max_cache_bytes=limit,
                         experiment_name="stream", val_fraction=0.0, image_size="72x80", hidden_channels=8,
                         embedding_dim=4, codebook_size=16)
    path = BucketReader.decide(manifest, source, max_bytes=limit)
    trainer = Trainer(config, manifest, source, tmp_path / "work", reader=path)
    try:
        proxy.seen.clear()
        result = trainer.train_epoch(1)
    finally:
        trainer.close()
    gets = _shard_gets(proxy)
    assert result.data_path == path.describe() and result.cache_hits + result.cache_misses == len(manifest)
    # Each shard once, but for the one shared by the two workers' halves (evicted before the second needs it).
    assert len(gets) <= packed.shards + 2, Counter(gets).most_common(3)


def test_an_epoch_starved_of_data_says_so_and_what_to_do(proxy, bucket, packed, tmp_path, caplog, one_thread_seeded):
    import logging

    from pokevq.config import TrainConfig
    from pokevq.run.report import render_report
    from pokevq.train.trainer import Trainer

    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    manifest = _manifest(storage)
    proxy.add_fault("delay", r"GET /[^?]*/_shards/.*\.tar", delay=0.3)  # a slow link to the shards
    source = FrameSource(storage, FrameCache(tmp_path / "cache", max_items=8))
    config = TrainConfig(device="cpu", num_workers=0, batch_size=16, max_cache_size=8, experiment_name="slow",
                         val_fraction=0.0, image_size="72x80", hidden_channels=8, embedding_dim=4, codebook_size=16)
    path = BucketReader.decide(manifest, source, max_bytes=None)
    trainer = Trainer(config, manifest, source, tmp_path / "work", reader=path)
    try:
        with caplog.at_level(logging.WARNING, logger="pokevq"):
            result = trainer.train_epoch(1)
    finally:
        trainer.close()
    assert result.data_stall > 0.2
    warning = next(r.getMessage() for r in caplog.records if "waited for data" in r.getMessage())
    # The bucket fits the cache: more workers, and the next epochs read local disk.
    assert "packed in shards" in warning and "--num-workers" in warning and "later epochs" in warning
    report = render_report({"experiment": "slow", "storage": "s3", "epochs": trainer.history, "best": trainer.best,
                            "data_path": path.describe()})
    assert "| data stall |" in report and "waited for data more than 20 %" in report
    assert f"- Data path: {path.describe()}" in report


def test_budget_and_size_options_read_like_people_write_them():
    from pokevq.cli import build_parser
    from pokevq.config import TrainConfig

    assert TrainConfig(time_budget="90m", experiment_name="x").schedule.time_budget_seconds == 5400
    assert TrainConfig(time_budget="6h", experiment_name="x").schedule.time_budget_seconds == 21600
    assert TrainConfig(time_budget="45", experiment_name="x").schedule.time_budget_seconds == 45
    with pytest.raises(ConfigError, match=r"time_budget \(--time-budget\) must be a duration like 90m"):
        TrainConfig(time_budget="soon", experiment_name="x")
    with pytest.raises(ConfigError, match=r"data_path \(--data-path\) must be one of auto, cached, streaming"):
        TrainConfig(data_path="fast", experiment_name="x")
    with pytest.raises(ConfigError, match=r"max_steps \(--max-steps\) must be an integer >= 0"):
        TrainConfig(max_steps=-1, experiment_name="x")
    args = build_parser().parse_args(["train", "--max-cache-bytes", "20GB", "--checkpoint-every-steps", "500"])
    assert args.max_cache_bytes == 20_000_000_000 and args.checkpoint_every_steps == 500


def test_shard_cache_limit_holds_under_many_concurrent_readers(tmp_path):
    import random

    budget, size = 5 * 4096, 4096
    cache = ShardCache(tmp_path / "shards", budget)
    data = os.urandom(size)
    stop = threading.Event()
    peaks: list[int] = []
    errors: list[BaseException] = []

    def sample() -> None:
        while not stop.is_set():
            seen, total = set(), 0
            for entry in os.scandir(cache.directory):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_ino not in seen:  # a file renamed during the scan is counted once
                    seen.add(st.st_ino)
                    total += st.st_size
            peaks.append(total)

    def read(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(150):
                opened = cache.open("ns", f"shard-{rng.randrange(40)}", size, lambda a, b: data[a:b])
                assert opened.view(0, 16) == data[:16]
                assert opened.fd < 0 or _on_disk(opened), "a shard was evicted while it was read"
                opened.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    sampler = threading.Thread(target=sample)
    sampler.start()
    readers = [threading.Thread(target=read, args=(i,)) for i in range(6)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join()
    stop.set()
    sampler.join()
    assert not errors, errors[0]
    assert peaks and max(peaks) <= budget


def test_a_mid_epoch_checkpoint_of_the_old_cached_path_restarts_its_epoch_with_a_warning(
    tmp_path, synth_frames, caplog
):
    import logging

    from pokevq.train.checkpoint import load_checkpoint
    from pokevq.train.trainer import Trainer
    from tests.helpers.runs import first_epoch_checkpoint

    config, manifest, source, written = first_epoch_checkpoint(synth_frames, tmp_path, "old")
    state = load_checkpoint(written)
    state.position = {"kind": "cached", "epoch": 2, "samples": 8}  # as an earlier pokevq wrote it mid-epoch
    with caplog.at_level(logging.WARNING, logger="pokevq"):
        resumed = Trainer(config, manifest, source, tmp_path / "two", resume_state=state, resume_name="old.pt")
    try:
        assert resumed.position is None
        assert any("epoch 2 starts again from its first batch" in r.getMessage() for r in caplog.records)
        result = resumed.train_epoch(2)
    finally:
        resumed.close()
    assert result.train["frames"] == len(manifest) and result.global_step > state["global_step"]
