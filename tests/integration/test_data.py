"""From S3 (moto) through the local store to training batches; bad frames skipped and reported."""

from __future__ import annotations

import pytest
import torch

from pokevq.data import Batch, BucketReader, FrameSource, warm_units
from pokevq.data.cache import FrameCache
from pokevq.data.manifest import index_frames
from pokevq.errors import ConnectError
from pokevq.storage import S3Storage
from pokevq.storage.local_server import free_port
from tests.helpers.frames import upload_tree

IMAGE_SIZE = (72, 80)
CORRUPT = {
    "pokemon_frames/game1/episode1/frame_100.png": "truncated",
    "pokemon_frames/game1/episode2/frame_100.png": "empty",
    "pokemon_frames/game2/episode1/frame_100.png": "text",
}


@pytest.fixture
def storage(bucket, moto_endpoint, s3_client, synth_frames):
    upload_tree(s3_client, bucket, synth_frames, "pokemon_frames/")
    good = (synth_frames / "game1" / "episode1" / "frame_001.png").read_bytes()
    bodies = {"truncated": good[: len(good) // 2], "empty": b"", "text": b"this is not a png, just text\n"}
    for key, kind in CORRUPT.items():
        s3_client.put_object(Bucket=bucket, Key=key, Body=bodies[kind])
    return S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)


@pytest.fixture
def source(storage, tmp_path):
    return FrameSource(storage, FrameCache(tmp_path / "cache"))


def make_loader(manifest, source, *, batch_size: int, shuffle: bool = False, seed: int = 0, num_workers: int = 0):
    path = BucketReader.decide(manifest, source, max_bytes=None)
    return path.loader(manifest, source, IMAGE_SIZE, batch_size=batch_size, seed=seed, shuffle=shuffle,
                       num_workers=num_workers, pin_memory=False)


def run_epoch(loader, epoch: int = 1) -> list[Batch]:
    loader.set_epoch(epoch)
    return list(loader)


def test_batches_are_float_images_and_corrupt_frames_are_skipped(storage, source):
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.0)
    assert len(manifest) == 27
    batches = run_epoch(make_loader(manifest, source, batch_size=5, shuffle=True))

    assert len(batches) == 6  # ceil(27 / 5)
    seen = []
    for batch in batches:
        assert isinstance(batch, Batch)
        if batch.images is not None:
            assert batch.images.dtype == torch.float32
            assert batch.images.shape == (len(batch.keys), 3, *IMAGE_SIZE)
            assert float(batch.images.min()) >= 0.0
            assert float(batch.images.max()) <= 1.0
        seen.extend(batch.keys)
    assert len(seen) == 24
    assert set(seen) == set(manifest["key"]) - set(CORRUPT)

    skipped = dict(item for batch in batches for item in batch.skipped)
    assert set(skipped) == set(CORRUPT)
    assert skipped["pokemon_frames/game1/episode2/frame_100.png"] == "empty file"
    assert skipped["pokemon_frames/game2/episode1/frame_100.png"].startswith("not an image")
    assert "truncated or corrupt" in skipped["pokemon_frames/game1/episode1/frame_100.png"]


def test_images_carry_the_frame_content(storage, source, synth_frames):
    """A decoded batch image is the frame itself (resized), not noise or a grey placeholder."""
    from PIL import Image

    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.0)
    key = "pokemon_frames/game2/episode2/frame_003.png"
    for epoch in (1, 2):  # fetched and decoded, then read back from its local unit
        (batch,) = run_epoch(make_loader(manifest[manifest["key"] == key], source, batch_size=1), epoch)
        expected = Image.open(synth_frames / "game2" / "episode2" / "frame_003.png").convert("RGB")
        expected = torch.tensor(list(expected.resize((80, 72), Image.Resampling.BOX).getdata()), dtype=torch.float32)
        expected = expected.reshape(72, 80, 3).permute(2, 0, 1) / 255.0
        assert torch.allclose(batch.images[0], expected, atol=1 / 255 + 1e-6)


def test_hits_and_misses(storage, source):
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.0)
    loader = make_loader(manifest, source, batch_size=8)
    first = run_epoch(loader, 1)
    assert sum(b.misses for b in first) == 24
    assert sum(b.hits for b in first) == 0
    second = run_epoch(loader, 2)
    assert sum(b.hits for b in second) == 24
    assert sum(b.misses for b in second) == 0
    # The corrupt frames are still reported on every pass.
    assert sum(len(b.skipped) for b in second) == 3


def test_second_pass_does_not_need_s3(storage, source, s3_client):
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.0)
    manifest = manifest[~manifest["key"].isin(CORRUPT)]
    loader = make_loader(manifest, source, batch_size=8)
    run_epoch(loader, 1)
    for key in manifest["key"]:
        s3_client.delete_object(Bucket=storage.bucket, Key=key)
    second = run_epoch(loader, 2)
    assert sum(len(b.keys) for b in second) == 24
    assert all(not b.skipped for b in second)


def test_vanished_object_is_skipped(storage, source, s3_client):
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.0)
    gone = "pokemon_frames/game1/episode1/frame_004.png"
    s3_client.delete_object(Bucket=storage.bucket, Key=gone)
    kept = "pokemon_frames/game1/episode1/frame_005.png"
    (batch,) = run_epoch(make_loader(manifest[manifest["key"].isin([gone, kept])], source, batch_size=2))
    assert batch.keys == ["pokemon_frames/game1/episode1/frame_005.png"]
    assert batch.skipped == [(gone, "object disappeared from storage")]


def test_unreachable_storage_is_fatal_not_skipped(storage, tmp_path):
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.0)
    dead = S3Storage(storage.bucket, "us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(ConnectError, match="Unable to connect to S3"):
        run_epoch(make_loader(manifest, FrameSource(dead, FrameCache(tmp_path / "dead-cache")), batch_size=4))


def test_warm_cache_reads_every_unit_once_before_training(storage, source, s3_client):
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.25, seed=0)
    path = BucketReader.decide(manifest, source, max_bytes=None)
    assert path.fits
    stats = warm_units(path, manifest, source, IMAGE_SIZE, progress=False)
    assert stats["requested"] == len(manifest) == 27
    assert stats["misses"] == 27 and stats["hits"] == 0 and stats["missing"] == 0
    assert 0 < stats["bytes"] < int(manifest["size"].sum())  # decoded units, smaller than the PNGs
    assert warm_units(path, manifest, source, IMAGE_SIZE, progress=False)["hits"] == 27
    for key in manifest["key"]:  # training reads the units warm wrote: the bucket is not needed
        s3_client.delete_object(Bucket=storage.bucket, Key=key)
    train = manifest[manifest["split"] == "train"]
    batches = run_epoch(path.loader(train, source, IMAGE_SIZE, batch_size=4, seed=0, shuffle=True, num_workers=0,
                                    pin_memory=False))
    assert sum(b.hits for b in batches) == len(set(train["key"]) - set(CORRUPT)) and not any(b.misses for b in batches)


def test_a_bucket_larger_than_the_cache_is_not_warmed(storage, tmp_path):
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.25, seed=0)
    source = FrameSource(storage, FrameCache(tmp_path / "small"))
    path = BucketReader.decide(manifest, source, max_bytes=int(manifest["size"].sum()) // 10)
    assert not path.fits and not path.keep_loose
    assert warm_units(path, manifest, source, IMAGE_SIZE, progress=False)["requested"] == 0


def test_worker_process_loader(storage, source):
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.0)
    manifest = manifest[manifest["game"] == "game1"]  # 12 good + 2 corrupt
    loader = make_loader(manifest, source, batch_size=4, shuffle=True, seed=1, num_workers=1)
    try:
        batches = run_epoch(loader, 1)
        keys = [k for b in batches for k in b.keys]
        assert sorted(keys) == sorted(set(manifest["key"]) - set(CORRUPT))
        assert {k for b in batches for k, _ in b.skipped} == set(CORRUPT) & set(manifest["key"])
        assert all(b.images.shape[1:] == (3, *IMAGE_SIZE) for b in batches if b.images is not None)
        assert sum(b.misses for b in batches) == 12
        # The second epoch is served from the local units the worker wrote.
        again = run_epoch(loader, 2)
        assert sum(b.hits for b in again) == 12
    finally:
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
