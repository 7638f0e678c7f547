"""Epoch-level metrics: reconstruction quality and codebook health.

Everything is accumulated over a whole epoch rather than averaged per batch, so a
small last batch weighs as much as its frames and perplexity reflects the codes
used across the epoch (per-batch perplexity is always capped by the batch size).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pokevq.model import count_codes


def psnr(mse: float, max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; inf for a perfect reconstruction."""
    if mse < 0:
        raise ValueError(f"mse must be >= 0, got {mse}")
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(max_val**2 / mse)


def perplexity_from_counts(counts: Tensor) -> float:
    """exp(entropy) of the code usage distribution: the effective number of codes used.

    All zeros -> 0.0, one code used -> 1.0, uniform over K codes -> K.
    """
    counts = counts.detach().double().reshape(-1)
    total = counts.sum()
    if total <= 0:
        return 0.0
    probs = counts[counts > 0] / total
    entropy = -(probs * probs.log()).sum()
    return float(entropy.exp())


def codebook_usage(counts: Tensor) -> float:
    """Share of codes used at least once, 0..1."""
    if counts.numel() == 0:
        return 0.0
    return float((counts > 0).sum()) / counts.numel()


class EpochMetrics:
    """Accumulates loss, pixel error and code counts over an epoch.

    Accumulators stay on the batches' device, so update() never waits on the GPU;
    only compute() reads them back.
    """

    def __init__(self, codebook_size: int) -> None:
        self.codebook_size = codebook_size
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.pixels = 0
        self._sse: Tensor | float = 0.0  # sum of squared error, float64
        self._loss_sum: Tensor | float = 0.0  # sum of loss * batch_size, float64
        self._counts: Tensor | None = None  # (codebook_size,) long

    @torch.no_grad()
    def update(
        self,
        recon: Tensor,
        target: Tensor,
        codes: Tensor,
        loss: float | Tensor,
        batch_size: int,
    ) -> None:
        """Add one batch. `loss` is the batch mean; it is weighted by batch_size."""
        if recon.shape != target.shape:
            raise ValueError(f"recon {tuple(recon.shape)} and target {tuple(target.shape)} differ")
        diff = recon.detach().float() - target.detach().float()
        self._sse = self._sse + diff.square().sum(dtype=torch.float64)
        self.pixels += target.numel()
        if isinstance(loss, Tensor):
            loss = loss.detach().double()
        self._loss_sum = self._loss_sum + loss * batch_size
        counts = count_codes(codes.detach(), self.codebook_size)
        self._counts = counts if self._counts is None else self._counts + counts.to(self._counts.device)
        self.frames += batch_size

    def compute(self) -> dict[str, float | int]:
        """Plain Python numbers: loss, mse, psnr, perplexity, codebook_usage, dead_codes, frames.

        With no batch seen every value is 0 (not nan), including dead_codes.
        """
        if self.frames == 0 or self.pixels == 0 or self._counts is None:
            return {
                "loss": 0.0,
                "mse": 0.0,
                "psnr": 0.0,
                "perplexity": 0.0,
                "codebook_usage": 0.0,
                "dead_codes": 0,
                "frames": 0,
            }
        mse = float(self._sse) / self.pixels
        counts = self._counts.cpu()
        return {
            "loss": float(self._loss_sum) / self.frames,
            "mse": mse,
            "psnr": psnr(mse),
            "perplexity": perplexity_from_counts(counts),
            "codebook_usage": codebook_usage(counts),
            "dead_codes": int((counts == 0).sum()),
            "frames": int(self.frames),
        }
