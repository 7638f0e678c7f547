"""A tiny training run against moto, as several pipeline tests set it up, and what it left in the bucket."""

from __future__ import annotations

from pathlib import Path

from pokevq.config import TrainConfig

# The smallest model the pipeline accepts on 72x80 frames: seconds per epoch on a CPU.
TINY = dict(image_size="72x80", hidden_channels=8, embedding_dim=4, codebook_size=16, downsample=8)
# The same model as `pokevq train` flags (downsample 8 is the default).
TINY_FLAGS = ["--image-size", "72x80", "--hidden-channels", "8", "--embedding-dim", "4", "--codebook-size", "16"]


def s3_train_config(root: Path, bucket: str, endpoint: str | None, **overrides) -> TrainConfig:
    """A TINY run on `bucket` at `endpoint`: 2 epochs of batch 4, no workers, cache and outputs under `root`,
    no local fallback; `overrides` replace any of these."""
    values = dict(
        use_s3=True,
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        num_epochs=2,
        batch_size=4,
        learning_rate=1e-3,
        num_workers=0,
        local_cache_dir=str(root / "cache"),
        output_dir=str(root / "outputs"),
        no_fallback=True,
        **TINY,
    )
    values.update(overrides)
    return TrainConfig(**values)


def list_keys(client, bucket: str, prefix: str = "") -> list[str]:
    """Every key under `prefix`, sorted, across all pages of the listing."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def tensorboard_scalars(client, bucket: str, experiment: str, target: Path) -> dict[str, list]:
    """The experiment's TensorBoard scalars in the bucket, per tag, read with TensorBoard's own reader
    (the event files are downloaded under `target` first)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for key in list_keys(client, bucket, f"tensorboard/{experiment}/"):
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(path))
    accumulator = EventAccumulator(str(target / "tensorboard" / experiment))
    accumulator.Reload()
    return {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]}


def slow_streaming_args(proxy, client, bucket: str, frames: Path, experiment: str, *options: str,
                        delay: float = 0.6, shard_bytes: int = 6 * 1024, upload: bool = True) -> list[str]:
    """`pokevq train` arguments of a 1-epoch streaming TINY run over `frames`, packed into small shards that come
    through the fault proxy's slow link (`delay` seconds a shard, about one a step): the epoch takes seconds, time
    to act in the middle of it. The cache holds about 3 shards of them, so nothing is warmed before training and
    every epoch reads its shards again. `options` are more flags (an output directory, say); `upload`: False when
    the bucket already holds `frames`."""
    import re

    from pokevq.data.pack import pack
    from pokevq.data.reader import PREVIEW_RESERVE_FRAMES
    from pokevq.data.shards import ShardIndex
    from pokevq.storage import S3Storage
    from tests.helpers.frames import upload_tree

    if upload:
        upload_tree(client, bucket, frames, "pokemon_frames/")
    # Packed frames are about 0.6 KB: 6 KiB shards hold about 10, two or three steps of batch 4.
    storage = S3Storage(bucket, "us-east-1", endpoint_url=proxy.url)
    pack(storage, "pokemon_frames", shard_bytes=shard_bytes, threads=4)
    infos = [info for info in storage.list("pokemon_frames/") if "/_shards/" not in info.key]
    located = ShardIndex.discover(storage, [i.key for i in infos]).locate_all([i.key for i in infos],
                                                                               [i.etag for i in infos])
    shards = located.shard_sizes.tolist()  # the bytes of each shard the run reads (its frames' span)
    previews = sum(sorted((i.size for i in infos), reverse=True)[:PREVIEW_RESERVE_FRAMES])  # as the run reserves
    room = previews + 3 * max(shards)
    assert room < previews + sum(shards), "the frames fit the cache: make more of them"
    proxy.add_fault("delay", rf"^GET /{re.escape(bucket)}/pokemon_frames/_shards/.*\.tar", delay=delay)
    return ["--use-s3", "--s3-bucket", bucket, "--s3-endpoint-url", proxy.url, "--experiment-name", experiment,
            "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--max-cache-bytes", str(room),
            "--no-fallback", *options, *TINY_FLAGS]


def ended(process, output: Path) -> tuple[str, list[str]]:
    """A `pokevq` process made sure to be gone (killed if it still runs): what its console showed (written to
    `output`), and the console's `Error:` lines."""
    if process.poll() is None:
        process.kill()
    process.wait()
    console = output.read_text()
    return console, [line for line in console.splitlines() if line.startswith("Error:")]


def first_epoch_checkpoint(frames: Path, work: Path, experiment: str, val_fraction: float = 0.0):
    """A TINY Trainer's first epoch over local `frames`: (config, manifest, source, its checkpoint's path), so a
    test can resume from that checkpoint as it likes."""
    from pokevq.config import TrainConfig
    from pokevq.data.cache import FrameCache
    from pokevq.data.manifest import index_frames
    from pokevq.data.source import FrameSource
    from pokevq.storage import LocalStorage
    from pokevq.train.trainer import Trainer

    storage = LocalStorage(str(frames))
    manifest = index_frames(storage, "", val_fraction=val_fraction, seed=0)
    config = TrainConfig(experiment_name=experiment, batch_size=4, num_workers=0, device="cpu", **TINY)
    source = FrameSource(storage, FrameCache(work / "cache"))
    first = Trainer(config, manifest, source, work / "one")
    try:
        return config, manifest, source, first.train_epoch(1).checkpoint_path
    finally:
        first.close()
