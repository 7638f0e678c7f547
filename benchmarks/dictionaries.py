"""The tile dictionaries alone on a split, and how much of the validation frames training never shows.

`benchmarks.quality --baselines-only` uses this instead of training: the same dictionaries the trainer
builds (pokevq.train.baselines: k-means of the training tiles at each codebook size, and the exact
dictionary of every training tile), built from every training frame and scored with the trainer's own
metrics (pokevq.train.metrics.QualityMetrics) on every validation frame in episode order, with the
frames' annotations when there are any. Seconds to a minute on 2 cores, no model.

`coverage` says why the exact dictionary is not perfect: the share of validation tile positions
(d x d patches on the code grid) whose patch never occurs in training, and the distinct patches of each side.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import torch

TILE = 8


def frame_batches(rows: pd.DataFrame, source: Any, image_hw: tuple[int, int], size: int = 64) -> Iterator[Any]:
    """(keys, (B,3,H,W) float frames in [0, 1]) of `rows` in their order, decoded as training decodes them."""
    from pokevq.data.frames import decode_frame

    keys: list[str] = []
    images: list[torch.Tensor] = []
    for key, etag in zip(rows["key"], rows["etag"].astype(str)):
        data, _ = source.read(key, etag)
        keys.append(key)
        images.append(decode_frame(data, image_hw))
        if len(images) == size:
            yield keys, torch.stack(images)
            keys, images = [], []
    if images:
        yield keys, torch.stack(images)


def fit(manifest: pd.DataFrame, source: Any, image_hw: tuple[int, int], codebooks: list[int],
        seed: int = 0) -> tuple[list[Any], Any]:
    """k-means at each codebook size smaller than the distinct training tiles, then the exact dictionary;
    also returns the training tiles' counter."""
    from pokevq.train.baselines import TileDictionary, kmeans
    from pokevq.train.metrics import TileCounter, to_uint8

    train = manifest[manifest["split"] == "train"]
    counter = TileCounter(TILE)  # in the trainer's order (a shuffle by the seed): k-means starts from the same tiles
    for _, batch in frame_batches(train.sample(n=len(train), random_state=seed), source, image_hw):
        counter.add(to_uint8(batch))
    tiles, counts = counter.tiles().float() / 255, counter.counts()
    found = [TileDictionary(f"k-means {k}", kmeans(tiles, counts, k, seed), TILE)
             for k in sorted(set(codebooks)) if k < len(tiles)]
    found.append(TileDictionary("exact dictionary", tiles, TILE))
    return found, counter


def score(dictionaries: list[Any], manifest: pd.DataFrame, source: Any, image_hw: tuple[int, int],
          annotations: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], Any]:
    """Each dictionary's validation metrics, as the trainer computes them; also the validation tiles' counter."""
    from pokevq.train.metrics import QualityMetrics, TileCounter, to_uint8

    val = manifest[manifest["split"] == "val"]
    episodes = dict(zip(val["key"], val["game"].astype(str) + "/" + val["episode"].astype(str)))
    metrics = {d.name: QualityMetrics(d.size, d.tile) for d in dictionaries}
    counter = TileCounter(TILE)
    for keys, images in frame_batches(val, source, image_hw):
        known = [annotations.get(key) for key in keys]
        context = dict(palettes=[a.palette if a is not None else None for a in known],
                       dialog_boxes=[a.box_at(image_hw) if a is not None else None for a in known],
                       sequences=[episodes[key] for key in keys])
        counter.add(to_uint8(images))
        for dictionary in dictionaries:
            codes = dictionary.encode(images)
            recon = dictionary.decode(codes)
            loss = torch.nn.functional.mse_loss(recon, images)
            metrics[dictionary.name].update(recon, images, codes, loss, images.shape[0], **context)
    return {d.name: {**metrics[d.name].compute(), "codes": d.size} for d in dictionaries}, counter


def coverage(train: Any, val: Any) -> dict[str, Any]:
    """How much of validation the training tiles cover (two pokevq.train.metrics.TileCounter)."""
    seen = train.state()
    val_counts = val.state()
    unseen = {key: count for key, count in val_counts.items() if key not in seen}
    positions = sum(val_counts.values())
    return {
        "train_tiles": len(seen),
        "val_tiles": len(val_counts),
        "val_tiles_unseen": len(unseen),
        "val_positions": positions,
        "val_positions_unseen": sum(unseen.values()),
        "val_positions_unseen_share": sum(unseen.values()) / max(1, positions),
    }


def baselines_only(manifest: pd.DataFrame, source: Any, image_hw: tuple[int, int], codebooks: list[int],
                   annotations: dict[str, Any]) -> dict[str, Any]:
    """The dictionaries' figures and the coverage, without a model: {"baselines": {...}, "coverage": {...}}."""
    dictionaries, train_tiles = fit(manifest, source, image_hw, codebooks)
    figures, val_tiles = score(dictionaries, manifest, source, image_hw, annotations)
    return {"baselines": figures, "coverage": coverage(train_tiles, val_tiles)}


def coverage_line(found: dict[str, Any]) -> str:
    return (f"Validation: {found['val_positions_unseen_share']:.2%} of its {found['val_positions']:,} tile positions "
            f"hold a tile that never occurs in training ({found['val_tiles_unseen']:,} of its {found['val_tiles']:,} "
            f"distinct tiles); training holds {found['train_tiles']:,} distinct tiles.")
