"""Frames read outside the epochs: the sample that seeds the codebook and fits the baselines, and the previews.

They are read through the frame source on threads, decoded as training decodes them, and an
unreadable one is left out: a few missing frames change a sample, not the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import torch

from pokevq.data.frames import decode_frame
from pokevq.data.source import FrameSource
from pokevq.errors import FrameDecodeError, StorageError
from pokevq.model.vqvae import VQVAE
from pokevq.train.baselines import TileDictionary, fit_baselines

log = logging.getLogger(__name__)

READ_THREADS = 16  # concurrent reads of the sample's frames
PREVIEW_FRAMES = 8
# Training frames a patch codebook is seeded from and the baseline dictionaries are built from: the same frames,
# so the report compares like with like (seeding holds them decoded: 69 KB each at 144x160).
SAMPLE_TRAIN_FRAMES = 4096


class FrameSamples:
    """The fixed frames a run reads besides its epochs: a training sample, the baselines' frames, the previews."""

    def __init__(self, source: FrameSource, manifest: pd.DataFrame, image_hw: tuple[int, int], seed: int,
                 sample_frames: int = SAMPLE_TRAIN_FRAMES, baseline_frames: int | None = None) -> None:
        """`baseline_frames`: how many training frames the baselines are fitted on (default: the sample; 0: none)."""
        self.source, self.image_hw, self.seed = source, image_hw, seed
        train_rows, val_rows = (manifest[manifest["split"] == split] for split in ("train", "val"))
        self.preview_rows = (val_rows if len(val_rows) else train_rows).head(PREVIEW_FRAMES)
        self.sample_rows = train_rows.sample(n=min(sample_frames, len(train_rows)), random_state=seed)
        self.baseline_rows = self.sample_rows if baseline_frames is None else train_rows.sample(
            n=min(baseline_frames, len(train_rows)), random_state=seed)

    def seed_codebook(self, model: VQVAE) -> None:
        """A patch codebook starts as the training frames' patches at every offset (pokevq.model.patches)."""
        started = time.perf_counter()
        filled = model.seed_codebook(batched(readable_frames(self.source, self.sample_rows, self.image_hw)))
        log.info("Seeded %d of %d codes from the patches of %d training frames in %.1f s", filled,
                 model.config.codebook_size, len(self.sample_rows), time.perf_counter() - started)

    def fit_baselines(self, model: VQVAE, device: torch.device) -> list[TileDictionary]:
        """k-means and exact tile dictionaries of the sample, with the model's codes and tile: what it must beat."""
        started = time.perf_counter()
        frames = readable_frames(self.source, self.baseline_rows, self.image_hw)
        found = fit_baselines((batch.to(device) for batch in batched(frames)), model.config.codebook_size,
                              model.config.downsample, self.seed)
        log.info("Baseline tile dictionaries from %d training frames in %.1f s: %s", len(self.baseline_rows),
                 time.perf_counter() - started, ", ".join(f"{d.name} ({d.size} tiles)" for d in found))
        return found

    @torch.no_grad()
    def preview(self, model: VQVAE, autocast: Callable[[], Any],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Originals and reconstructions of the preview frames (read again each time), on the CPU."""
        images = list(readable_frames(self.source, self.preview_rows, self.image_hw, keep=True))
        if not images:
            return None
        originals = torch.stack(images).to(device)
        model.eval()
        with autocast():
            recon = model(originals).recon.float()
        model.train()
        return originals.cpu(), recon.clamp(0, 1).cpu()


def readable_frames(source: FrameSource, rows: pd.DataFrame, image_hw: tuple[int, int],
                    keep: bool = False) -> Iterator[torch.Tensor]:
    """Decoded frames of `rows`; an unreadable frame is left out. Frames read once (seeding, baselines) stay out
    of the cache unless `keep`: the epochs' data path owns its room."""
    def read(pair: tuple[str, str]) -> bytes | None:
        try:
            return source.read(*pair, keep=keep)[0]
        except StorageError:
            return None

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        for data in pool.map(read, zip(rows["key"], rows["etag"].astype(str))):
            try:
                if data is not None:
                    yield decode_frame(data, image_hw)
            except FrameDecodeError:
                continue


def batched(frames: Iterable[torch.Tensor], size: int = 64) -> Iterator[torch.Tensor]:
    """(size, C, H, W) stacks of `frames`, the last one shorter."""
    images: list[torch.Tensor] = []
    for image in frames:
        images.append(image)
        if len(images) == size:
            yield torch.stack(images)
            images = []
    if images:
        yield torch.stack(images)
