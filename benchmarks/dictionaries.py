"""Tokenizers scored on a split the same way: the tile dictionaries, a trained model, and what training never shows.

`benchmarks.quality` uses this for every row of its table. The dictionaries are the ones the trainer
builds (pokevq.train.baselines: k-means of the training tiles at each codebook size, and the exact
dictionary of every training tile), built here from every training frame and timed. `score` runs any
tokenizer (a dictionary, or a trained model behind the same `encode`/`decode`) over every validation
frame in episode order, 16 frames a batch, and measures with the trainer's own metrics
(pokevq.train.metrics.QualityMetrics, with the frames' annotations when there are any), plus:

- the pixel accuracy on the *unseen* positions: the 8x8 tile positions of the code grid whose patch never
  occurs in training (the positions `coverage` counts), from the same palette-snapped pixels;
- the encode speed: seconds spent in `encode` alone, every tokenizer on the same batches in turn.

`coverage` says why the exact dictionary is not perfect: the share of validation tile positions whose
patch never occurs in training, and the distinct patches of each side.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

import pandas as pd
import torch

TILE = 8
BATCH = 16  # validation frames per batch, as the trainer's loader serves them at the guide's batch size


class Tokenizer(Protocol):
    """What `score` needs of a tokenizer: a TileDictionary is one, a model goes behind a small adapter."""

    name: str

    @property
    def size(self) -> int: ...  # codes it can emit

    @property
    def tile(self) -> int: ...  # side of the square one code stands for

    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...  # (B,3,H,W) in [0,1] -> (B,h,w) codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...  # (B,h,w) codes -> (B,3,H,W) in [0,1]


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
        seed: int = 0) -> tuple[list[Any], dict[str, float], Any]:
    """k-means at each codebook size smaller than the distinct training tiles, then the exact dictionary, from
    every training frame; also the seconds each took to build (counting the training tiles included) and the
    training tiles' counter."""
    from pokevq.train.baselines import TileDictionary, kmeans
    from pokevq.train.metrics import TileCounter, to_uint8

    started = time.perf_counter()
    train = manifest[manifest["split"] == "train"]
    counter = TileCounter(TILE)  # in the trainer's order (a shuffle by the seed): k-means starts from the same tiles
    for _, batch in frame_batches(train.sample(n=len(train), random_state=seed), source, image_hw):
        counter.add(to_uint8(batch))
    tiles, counts = counter.tiles().float() / 255, counter.counts()
    counted = time.perf_counter() - started
    found, seconds = [], {}
    for k in sorted(set(codebooks)):
        if k < len(tiles):
            started = time.perf_counter()
            found.append(TileDictionary(f"k-means {k}", kmeans(tiles, counts, k, seed), TILE))
            seconds[found[-1].name] = counted + time.perf_counter() - started
    found.append(TileDictionary("exact dictionary", tiles, TILE))
    seconds[found[-1].name] = counted
    return found, seconds, counter


def score(tokenizers: list[Tokenizer], manifest: pd.DataFrame, source: Any, image_hw: tuple[int, int],
          annotations: dict[str, Any], seen: Any, device: Any = "cpu") -> tuple[dict[str, dict[str, Any]], Any]:
    """Each tokenizer's validation figures (the trainer's metrics, `codes`, `codes_used`,
    `unseen_pixel_accuracy`, `encode_frames_per_second`), and the validation tiles' counter. `seen` is
    the training tiles' counter: a position is unseen when its tile is not among them."""
    from pokevq.train.metrics import QualityMetrics, TileCounter, snap_to_palette, to_uint8

    device = torch.device(device)
    val = manifest[manifest["split"] == "val"]
    episodes = dict(zip(val["key"], val["game"].astype(str) + "/" + val["episode"].astype(str)))
    metrics = {t.name: QualityMetrics(t.size, t.tile) for t in tokenizers}
    encoding = dict.fromkeys(metrics, 0.0)
    unseen_right = dict.fromkeys(metrics, 0)
    unseen_pixels = 0
    training = seen.state()
    counter = TileCounter(TILE)
    for keys, images in frame_batches(val, source, image_hw, size=BATCH):
        images = images.to(device)
        known = [annotations.get(key) for key in keys]
        context = dict(palettes=[a.palette if a is not None else None for a in known],
                       dialog_boxes=[a.box_at(image_hw) if a is not None else None for a in known],
                       sequences=[episodes[key] for key in keys])
        frames = to_uint8(images)
        counter.add(frames)
        palette = batch_palette(frames, context["palettes"])
        unseen = unseen_positions(frames, training).repeat_interleave(TILE, 1).repeat_interleave(TILE, 2)
        unseen_pixels += int(unseen.sum())
        for tokenizer in tokenizers:
            _sync(device)
            started = time.perf_counter()
            codes = tokenizer.encode(images)
            _sync(device)
            encoding[tokenizer.name] += time.perf_counter() - started
            recon = tokenizer.decode(codes).float()
            loss = torch.nn.functional.mse_loss(recon, images)
            metrics[tokenizer.name].update(recon, images, codes, loss, images.shape[0], **context)
            right = (snap_to_palette(recon, palette) == frames).all(dim=1)  # as QualityMetrics judges a pixel
            unseen_right[tokenizer.name] += int((right & unseen).sum())
    figures = {}
    for tokenizer in tokenizers:
        found = metrics[tokenizer.name].compute()
        figures[tokenizer.name] = {
            **found, "codes": tokenizer.size, "codes_used": round(found.get("codebook_usage", 0) * tokenizer.size),
            "unseen_pixel_accuracy": unseen_right[tokenizer.name] / unseen_pixels if unseen_pixels else None,
            "encode_frames_per_second": found.get("frames", 0) / max(encoding[tokenizer.name], 1e-9),
        }
    if unseen_pixels != coverage(seen, counter)["val_positions_unseen"] * TILE * TILE:
        raise AssertionError("the unseen positions scored are not the ones coverage counts")
    return figures, counter


def batch_palette(frames: Any, palettes: list[Any]) -> Any:
    """(B,P,3) palettes the metrics snap a batch to: the game's shades where known, else the frame's colours."""
    from pokevq.train.metrics import _known, frame_palette, stack_palettes

    return stack_palettes([frame_palette(f) if p is None else _known(p, f.device) for f, p in zip(frames, palettes)])


def unseen_positions(frames: Any, training: dict[bytes, int]) -> Any:
    """(B,h,w) bool: whether each tile position of (B,3,H,W) uint8 frames holds a tile training never shows."""
    from pokevq.train.metrics import tile_rows

    b, _, h, w = frames.shape
    distinct, inverse = torch.unique(tile_rows(frames, TILE), dim=0, return_inverse=True)
    new = torch.tensor([row.tobytes() not in training for row in distinct.cpu().numpy()], dtype=torch.bool)
    return new.to(frames.device)[inverse].view(b, h // TILE, w // TILE)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def coverage_line(found: dict[str, Any]) -> str:
    return (f"Validation: {found['val_positions_unseen_share']:.2%} of its {found['val_positions']:,} tile positions "
            f"hold a tile that never occurs in training ({found['val_tiles_unseen']:,} of its {found['val_tiles']:,} "
            f"distinct tiles); training holds {found['train_tiles']:,} distinct tiles.")
