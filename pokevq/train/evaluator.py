"""Validation: the model's metrics over every rank's validation frames, and the tile dictionaries on the same ones.

The dictionaries (what the model must beat, `baselines.py`) are fitted once per experiment on rank 0
and scored, with the model, on the first `BASELINE_VAL_FRAMES` validation frames across all ranks,
so the report's rows describe the same frames at any world size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from pokevq.data.batch import Batch
from pokevq.dist import collectives
from pokevq.model.vqvae import VQVAE
from pokevq.train.baselines import TileDictionary
from pokevq.train.epoch_stats import FrameCounts
from pokevq.train.metrics import QualityMetrics
from pokevq.train.state import TrainState

BASELINE_VAL_FRAMES = 1000  # validation frames they are scored on (each rank's first ones, in episode order)


class Evaluator:
    """Scores the model (and once, the baselines) on a validation loader; `baselines` keeps their figures."""

    def __init__(self, model: VQVAE, loader: Any, autocast: Callable[[], Any], device: torch.device,
                 fit_baselines: Callable[[], list[TileDictionary]], frames: pd.DataFrame, image_hw: tuple[int, int],
                 annotations: dict[str, Any] | None = None, baselines: dict[str, dict[str, Any]] | None = None) -> None:
        """`frames`: the validation rows (each frame's episode, for token stability); `annotations`: where the
        frames came with them (pokevq synth), each frame's palette and dialog box."""
        self.model, self.loader, self.autocast, self.device = model, loader, autocast, device
        self.fit_baselines, self.image_hw, self.annotations = fit_baselines, image_hw, annotations or {}
        self.episodes = dict(zip(frames["key"], frames["game"].astype(str) + "/" + frames["episode"].astype(str)))
        self.baselines = baselines  # the dictionaries' figures, once per experiment
        self.model_on_baseline_frames: dict[str, Any] | None = None  # this epoch's model on the same frames

    @torch.no_grad()
    def __call__(self, counts: FrameCounts, state: TrainState) -> dict[str, float]:
        """The split's metrics (perplexity and usage over the whole split); every rank's frame counts join `counts`."""
        config = self.model.config
        dictionaries = self._shared_dictionaries() if collectives.from_first(self.baselines is None) else []
        scores = {d.name: QualityMetrics(d.size, d.tile) for d in dictionaries}
        # The model's figures in two parts, merged for the split: `head` holds the frames the dictionaries see.
        head, rest = QualityMetrics(config.codebook_size, config.downsample), QualityMetrics(
            config.codebook_size, config.downsample)
        limit, scored = -(-BASELINE_VAL_FRAMES // collectives.world_size()), 0
        mine = FrameCounts()
        self.model.eval()
        for batch in self.loader:
            mine.account(batch, state)
            images = batch.pixels(self.device)
            if images is None:
                continue
            if scored < limit:
                self._score(batch, images, head, dictionaries, scores)
                scored += images.shape[0]
            else:
                if not rest.frames:
                    rest.follow(head)
                self._score(batch, images, rest, [], {})
        self.model.train()
        part = ({"head": head.state(), "rest": rest.state(),
                 **{f"baseline {name}": score.state() for name, score in scores.items()}}, mine)
        parts = collectives.gather_objects(part)  # each rank's share
        if dictionaries:
            self.baselines = {d.name: {**_merged(parts, f"baseline {d.name}", codes=d.size, tile=d.tile).compute(),
                                       "codes": d.size} for d in dictionaries}
        size, down = config.codebook_size, config.downsample
        self.model_on_baseline_frames = (_merged(parts, "head", codes=size, tile=down).compute()
                                         if self.baselines else None)
        counts.join([share for _, share in parts], state)
        return _merged(parts, "head", "rest", codes=size, tile=down).compute()

    def _score(self, batch: Batch, images: torch.Tensor, model_metrics: QualityMetrics,
               dictionaries: list[TileDictionary], scores: dict[str, QualityMetrics]) -> None:
        with self.autocast():
            out = self.model(images)
        known = [self.annotations.get(key) for key in batch.keys]
        context = dict(palettes=[a.palette if a is not None else None for a in known],
                       dialog_boxes=[a.box_at(self.image_hw) if a is not None else None for a in known],
                       sequences=[self.episodes.get(key, key) for key in batch.keys])
        model_metrics.update(out.recon.float(), images, out.codes, out.loss, images.shape[0], **context)
        for dictionary in dictionaries:
            codes = dictionary.encode(images)
            recon = dictionary.decode(codes)
            loss = torch.nn.functional.mse_loss(recon, images.float())
            scores[dictionary.name].update(recon, images, codes, loss, images.shape[0], **context)

    def _shared_dictionaries(self) -> list[TileDictionary]:
        """Rank 0's tile dictionaries on every rank (fitted once, where the previews and TensorBoard are)."""
        shared = collectives.on_first(lambda: [(d.name, d.tiles.cpu(), d.tile) for d in self.fit_baselines()])
        return [TileDictionary(name, tiles.to(self.device), tile) for name, tiles, tile in shared]


def _merged(parts: list[Any], *names: str, codes: int, tile: int) -> QualityMetrics:
    """The named metrics of every rank's share, merged."""
    joined = QualityMetrics(codes, tile)
    for states, _ in parts:
        for name in names:
            joined.merge(states[name])
    return joined
