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
