"""Quantizers: encoder latents (B,D,h,w) -> one discrete code per position, and back.

Three kinds, chosen by `ModelConfig.quantizer`:

- ``ema``: nearest-neighbour lookup in a codebook that follows EMA k-means updates
  (van den Oord et al. 2017, appendix A.1). The default: no codebook loss, converges fast.
- ``vq``: the same lookup with a codebook learned by gradient descent through a codebook
  loss (the original VQ-VAE); kept as the baseline the others are measured against.
- ``fsq``: finite scalar quantization (Mentzer et al. 2023): a few bounded scalars, each
  rounded to a fixed number of levels; the codebook is implicit, so it cannot collapse.

The codebook quantizers share what keeps a codebook alive, each switchable so the
benchmark can show what it does:

- ``codebook_init``: ``kmeans`` (k-means++ seeds and Lloyd steps on the first batch's
  latents), ``data`` (random latents of the first batch) or ``random`` (a fixed random
  draw, the classic set-up that leaves codes out of the data's reach);
- ``dead_code_restart``: a code whose usage (EMA of its assignments per batch) falls
  under ``dead_code_threshold`` moves onto a latent of the current batch: ``worst``
  draws latents in proportion to their squared quantization error (so the tiles the
  codebook represents worst get codes first, as k-means++ seeds, and none is restarted
  while every latent is represented about equally well), ``random`` draws them
  uniformly, ``off`` never restarts;
- ``code_dim``/``cosine``: look codes up in a low-dimensional projection of the latent,
  optionally on the unit sphere (ViT-VQGAN's factorized, l2-normalized codes).

All maths runs in fp32, even under autocast: bf16 distances are too coarse to pick the
right nearest code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pokevq.dist.collectives import gather_rows, sync_from_first
from pokevq.errors import ConfigError
from pokevq.model.options import CODEBOOK_INITS, DEAD_CODE_RESTARTS, fsq_levels

KMEANS_ITERATIONS = 10


class Quantized(NamedTuple):
    z_q: Tensor  # (B,D,h,w) fp32: forward value quantized, gradient straight through to z_e
    loss: Tensor  # the quantizer's own loss terms, already weighted (0 for FSQ)
    commit_loss: Tensor  # MSE between the looked-up latent and its code (0 for FSQ), for the logs
    codes: Tensor  # (B,h,w) long
    perplexity: Tensor  # exp(entropy) of code usage in this batch, detached


def count_codes(codes: Tensor, codebook_size: int) -> Tensor:
    """How often each code occurs in `codes` (any shape), as a (codebook_size,) long tensor."""
    return torch.bincount(codes.reshape(-1).long(), minlength=codebook_size)


def batch_perplexity(counts: Tensor) -> Tensor:
    probs = counts.float() / counts.sum().clamp_min(1)
    return torch.exp(-(probs * torch.log(probs + 1e-10)).sum()).detach()


def _to_rows(z: Tensor) -> Tensor:
    """(B,C,h,w) -> (B*h*w, C)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def _to_map(rows: Tensor, like: tuple[int, int, int]) -> Tensor:
    """(B*h*w, C) -> (B,C,h,w) for a (B,h,w) grid."""
    b, h, w = like
    return rows.view(b, h, w, -1).permute(0, 3, 1, 2)


def _sample_rows(x: Tensor, n: int) -> Tensor:
    """n random rows of x; with replacement only when x has fewer than n rows."""
    if x.shape[0] >= n:
        idx = torch.randperm(x.shape[0], device=x.device)[:n]
    else:
        idx = torch.randint(0, x.shape[0], (n,), device=x.device)
    return x[idx]


def _squared_distances(rows: Tensor, codebook: Tensor) -> Tensor:
    """(N,K) squared distances via ||z||^2 - 2 z.e + ||e||^2 (never an N*K*D tensor)."""
    return rows.pow(2).sum(1, keepdim=True) - 2.0 * rows @ codebook.t() + codebook.pow(2).sum(1).unsqueeze(0)


def kmeans(rows: Tensor, k: int, iterations: int = KMEANS_ITERATIONS, cosine: bool = False) -> Tensor:
    """k centroids of `rows`: k-means++ seeding, then Lloyd steps.

    When the rows hold fewer than k distinct points, the surplus seeds repeat points (the
    dead-code restarts move them later); a centroid that loses all its rows stays put.
    """
    rows = rows.float()
    n = rows.shape[0]
    if n <= k:  # every row is a centroid and the surplus repeat rows at random: no search to do
        spare = torch.randint(0, n, (k - n,), device=rows.device)
        return rows[torch.cat([torch.randperm(n, device=rows.device), spare])].clone()
    centroids = rows.new_empty(k, rows.shape[1])  # filled in place: growing it by cat costs k^2
    centroids[0] = rows[int(torch.randint(0, n, (1,)))]
    nearest = _squared_distances(rows, centroids[:1]).squeeze(1).clamp_min(0)
    for i in range(1, k):
        total = nearest.sum()
        if total <= 0:  # every row is already a centroid: repeat rows at random
            centroids[i:] = rows[torch.randint(0, n, (k - i,), device=rows.device)]
            break
        chosen = rows[torch.multinomial(nearest / total, 1)]
        centroids[i] = chosen[0]
        nearest = torch.minimum(nearest, _squared_distances(rows, chosen).squeeze(1).clamp_min(0))
    for _ in range(iterations):
        assign = _squared_distances(rows, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, rows)
        counts = torch.bincount(assign, minlength=k).float().unsqueeze(1)
        updated = sums / counts.clamp_min(1)
        if cosine:
            updated = F.normalize(updated, dim=1)
        centroids = torch.where(counts > 0, updated, centroids)
    return centroids


class CodebookQuantizer(nn.Module):
    """Nearest-neighbour lookup in a codebook of `codebook_size` vectors; the base of `ema` and `vq`.

    With `code_dim` the lookup happens in a learned low-dimensional projection of the
    latent (projected back after quantization); with `cosine` on the unit sphere.
    """

    def __init__(
        self,
        codebook_size: int,
        embedding_dim: int,
        *,
        code_dim: int = 0,
        cosine: bool = False,
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        codebook_init: str = "kmeans",
        dead_code_restart: str = "worst",
        dead_code_threshold: float = 0.01,
    ) -> None:
        super().__init__()
        if codebook_init not in CODEBOOK_INITS:
            raise ConfigError(f"codebook_init must be one of {', '.join(CODEBOOK_INITS)}, got {codebook_init!r}")
        if dead_code_restart not in DEAD_CODE_RESTARTS:
            raise ConfigError(
                f"dead_code_restart must be one of {', '.join(DEAD_CODE_RESTARTS)}, got {dead_code_restart!r}"
            )
        self.codebook_size = codebook_size
        self.embedding_dim = embedding_dim
        self.code_dim = code_dim or embedding_dim
        self.cosine = cosine
        self.commitment_cost = commitment_cost
        self.decay = decay
        self.codebook_init = codebook_init
        self.dead_code_restart = dead_code_restart
        self.dead_code_threshold = dead_code_threshold
        if code_dim:
            self.project_in: nn.Module = nn.Conv2d(embedding_dim, code_dim, 1)
            self.project_out: nn.Module = nn.Conv2d(code_dim, embedding_dim, 1)
        else:
            self.project_in = self.project_out = nn.Identity()
        # A buffer, not a Python bool, so a resumed run does not re-initialise.
        self.register_buffer("initialized", torch.tensor(codebook_init == "random"))
        # Usage per code: EMA of how many latents each code took per batch (decides which codes are dead).
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        # Host-side copy of `initialized`, so training steps need not read it off the GPU.
        self._initialized_cache = False

    # The codebook itself is a buffer (ema) or a parameter (vq); subclasses provide it.
    embedding: Tensor

    def _random_codebook(self) -> Tensor:
        weight = torch.randn(self.codebook_size, self.code_dim)
        return F.normalize(weight, dim=1) if self.cosine else weight

    # ---------------------------------------------------------------- public
    def forward(self, z_e: Tensor) -> Quantized:
        b, _, h, w = z_e.shape
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            rows = self._rows(z_e)
            detached = rows.detach()
            # Training in several processes, the codebook learns from every rank's latents: each rank
            # computes the same update from all of them, and rank 0's result is kept everywhere.
            everyone, start = gather_rows(detached) if self.training else (detached, 0)
            first_batch = self.training and not self._is_initialized()
            if first_batch:
                self._initialize(everyone)
            codebook = self._codebook()
            all_codes = _squared_distances(everyone, codebook.detach()).argmin(dim=1)
            codes = all_codes[start:start + detached.shape[0]]
            counts = torch.bincount(codes, minlength=self.codebook_size)
            quantized = F.embedding(codes, codebook)
            if self.training:
                alone = everyone is detached  # one process: this batch's codes are all the codes
                self._learn(everyone, all_codes,
                            counts if alone else torch.bincount(all_codes, minlength=self.codebook_size),
                            (quantized if alone else F.embedding(all_codes, codebook)).detach(), first_batch)
                sync_from_first(*self._codebook_state())  # a no-op in one process
            commit_loss = F.mse_loss(rows, quantized.detach())
            loss = self.commitment_cost * commit_loss + self._codebook_loss(detached, quantized)
            # Straight-through in training; the code's own vector otherwise, so a validation reconstruction is
            # exactly what decoding the codes gives (pokevq.tokenizer).
            straight = rows + (quantized - rows).detach() if self.training else quantized
            z_q = self.project_out(_to_map(straight, (b, h, w))).float()
        return Quantized(z_q, loss, commit_loss, codes.view(b, h, w), batch_perplexity(counts))

    @torch.no_grad()
    def lookup(self, z_e: Tensor) -> Tensor:
        """Code indices (B,h,w) for latents (B,D,h,w); never changes the codebook."""
        b, _, h, w = z_e.shape
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            return _squared_distances(self._rows(z_e), self._codebook()).argmin(dim=1).view(b, h, w)

    def embed(self, codes: Tensor) -> Tensor:
        """Decoder input (B,D,h,w) for code indices (B,h,w)."""
        b, h, w = codes.shape
        with torch.autocast(device_type=codes.device.type, enabled=False):
            rows = F.embedding(codes.reshape(-1).long(), self._codebook())
            return self.project_out(_to_map(rows, (b, h, w)).contiguous()).float()

    def codebook_vectors(self) -> Tensor:
        """(K, code_dim) fp32 codebook as the lookup sees it."""
        return self._codebook().detach()

    # -------------------------------------------------------------- internals
    def _rows(self, z_e: Tensor) -> Tensor:
        rows = _to_rows(self.project_in(z_e.float()))
        return F.normalize(rows, dim=1) if self.cosine else rows

    def _codebook(self) -> Tensor:
        weight = self.embedding.float()
        return F.normalize(weight, dim=1) if self.cosine else weight

    def _codebook_loss(self, rows: Tensor, quantized: Tensor) -> Tensor:
        return quantized.new_zeros(())

    def _is_initialized(self) -> bool:
        if not self._initialized_cache:
            self._initialized_cache = bool(self.initialized)
        return self._initialized_cache

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._initialized_cache = False  # re-read the loaded buffer on the next step

    @torch.no_grad()
    def _initialize(self, rows: Tensor) -> None:
        """Place every code on the data, so none starts out of its reach.

        Each code starts with the usage it has in this batch: a surplus code that took no
        latent (more codes than distinct latents) is dead at once and, with restarts on,
        moves to where the codebook represents the data worst on the next step.
        """
        if self.codebook_init == "kmeans":
            codebook = kmeans(rows, self.codebook_size, cosine=self.cosine)
        else:
            codebook = _sample_rows(rows, self.codebook_size)
        # Noise separates duplicates when the batch has fewer distinct vectors than codes.
        codebook = codebook + torch.randn_like(codebook) * 1e-3 * rows.std(correction=0).clamp_min(1e-3)
        if self.cosine:
            codebook = F.normalize(codebook, dim=1)
        usage = torch.bincount(_squared_distances(rows, codebook).argmin(1), minlength=self.codebook_size).float()
        self._set_codes(torch.ones(self.codebook_size, dtype=torch.bool, device=rows.device), codebook, usage)
        self.initialized.fill_(True)
        self._initialized_cache = True

    @torch.no_grad()
    def _learn(self, rows: Tensor, codes: Tensor, counts: Tensor, quantized: Tensor, first_batch: bool) -> None:
        """Track usage, update the codebook and restart dead codes (the init batch set all of it itself)."""
        if first_batch:
            return
        self.cluster_size.mul_(self.decay).add_(counts.float(), alpha=1 - self.decay)
        self._update_codebook(rows, codes)
        if self.dead_code_restart == "off" or self.dead_code_threshold <= 0:
            return
        dead = self.cluster_size < self.dead_code_threshold
        if self.dead_code_restart == "worst":
            error = (rows - quantized).pow(2).sum(1)
            # The tiny floor keeps the draw defined when every latent already sits on a code.
            picks = torch.multinomial(error + 1e-12 * (error.mean() + 1e-12), self.codebook_size, replacement=True)
            # Only a latent represented worse than average earns a code: while the codebook covers the
            # data, dead codes wait in reserve instead of becoming duplicates of codes in use.
            dead = dead & (error[picks] > error.mean())
        else:
            picks = torch.randint(0, rows.shape[0], (self.codebook_size,), device=rows.device)
        # A restarted code gets the usage of one latent per batch: it survives while it is used.
        self._set_codes(dead, rows[picks], 1.0)

    def _update_codebook(self, rows: Tensor, codes: Tensor) -> None:
        """EMA step (ema); nothing for a codebook learned by gradient (vq)."""

    def _set_codes(self, which: Tensor, vectors: Tensor, usage: Tensor | float) -> None:
        """Move the codes where `which` is true onto `vectors` with `usage` (torch.where: no GPU sync)."""
        raise NotImplementedError

    def _codebook_state(self) -> tuple[Tensor, ...]:
        """What a training step changes besides the parameters' gradients: kept identical across ranks."""
        return (self.embedding, self.cluster_size)


class VectorQuantizerEMA(CodebookQuantizer):
    """Codebook learned by exponential moving averages of the latents assigned to each code."""

    def __init__(self, codebook_size: int, embedding_dim: int, **options: Any) -> None:
        super().__init__(codebook_size, embedding_dim, **options)
        self.eps = 1e-5  # Laplace smoothing so a code with no members never divides by zero
        embedding = self._random_codebook()
        self.register_buffer("embedding", embedding)
        self.register_buffer("embed_sum", embedding.clone())

    @torch.no_grad()
    def _update_codebook(self, rows: Tensor, codes: Tensor) -> None:
        """One EMA k-means step: codes move towards the mean of the latents assigned to them."""
        batch_sum = torch.zeros_like(self.embed_sum).index_add_(0, codes, rows)
        self.embed_sum.mul_(self.decay).add_(batch_sum, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        means = self.embed_sum / smoothed.unsqueeze(1)
        self.embedding.copy_(F.normalize(means, dim=1) if self.cosine else means)

    def _codebook_state(self) -> tuple[Tensor, ...]:
        return (self.embedding, self.embed_sum, self.cluster_size)

    def _set_codes(self, which: Tensor, vectors: Tensor, usage: Tensor | float) -> None:
        rows = which.unsqueeze(1)
        usage = torch.as_tensor(usage, dtype=self.cluster_size.dtype, device=self.cluster_size.device)
        self.embedding.copy_(torch.where(rows, vectors, self.embedding))
        self.embed_sum.copy_(torch.where(rows, vectors * usage.reshape(-1, 1), self.embed_sum))
        self.cluster_size.copy_(torch.where(which, usage.expand_as(self.cluster_size), self.cluster_size))


class VectorQuantizer(CodebookQuantizer):
    """Codebook learned by gradient descent on ||sg(z) - e||^2 (the original VQ-VAE)."""

    def __init__(self, codebook_size: int, embedding_dim: int, **options: Any) -> None:
        super().__init__(codebook_size, embedding_dim, **options)
        if self.codebook_init == "random":
            # The paper's uniform(-1/K, 1/K): small codes that the latents must come to.
            weight = torch.empty(codebook_size, self.code_dim).uniform_(-1 / codebook_size, 1 / codebook_size)
        else:
            weight = self._random_codebook()
        self.embedding = nn.Parameter(weight)

    def _codebook_loss(self, rows: Tensor, quantized: Tensor) -> Tensor:
        return F.mse_loss(quantized, rows)

    @torch.no_grad()
    def _set_codes(self, which: Tensor, vectors: Tensor, usage: Tensor | float) -> None:
        usage = torch.as_tensor(usage, dtype=self.cluster_size.dtype, device=self.cluster_size.device)
        # Through .data: this step's graph still holds the codebook, and autograd must not see the change.
        self.embedding.data.copy_(torch.where(which.unsqueeze(1), vectors, self.embedding.data))
        self.cluster_size.copy_(torch.where(which, usage.expand_as(self.cluster_size), self.cluster_size))


# ---------------------------------------------------------------------------
# FSQ


def _round_straight_through(x: Tensor) -> Tensor:
    return x + (x.round() - x).detach()


class FSQ(nn.Module):
    """Finite scalar quantization: project to len(levels) scalars, bound each, round to its levels."""

    def __init__(self, codebook_size: int, embedding_dim: int, levels: Sequence[int] | None = None) -> None:
        super().__init__()
        levels = tuple(levels) if levels is not None else fsq_levels(codebook_size)
        if math.prod(levels) != codebook_size:
            raise ConfigError(f"FSQ levels {levels} do not multiply to codebook_size {codebook_size}")
        self.codebook_size = codebook_size
        self.levels = levels
        self.project_in = nn.Conv2d(embedding_dim, len(levels), 1)
        self.project_out = nn.Conv2d(len(levels), embedding_dim, 1)
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        basis = torch.cumprod(torch.tensor((1, *levels[:-1])), 0)
        self.register_buffer("_basis", basis, persistent=False)

    def _bound(self, z: Tensor) -> Tensor:
        """tanh to (-L/2, L/2), shifted for even L so rounding gives exactly L values."""
        half = (self._levels - 1) * (1 - 1e-3) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def _quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """(digits (N,d) in 0..L-1 as float, normalized values in [-1, 1]) for (B,D,h,w) latents."""
        rows = _to_rows(self.project_in(z_e.float()))
        rounded = _round_straight_through(self._bound(rows))
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        return rounded + half_width, rounded / half_width

    def forward(self, z_e: Tensor) -> Quantized:
        b, _, h, w = z_e.shape
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            digits, values = self._quantize(z_e)
            codes = (digits.detach().round().long() * self._basis).sum(1)
            z_q = self.project_out(_to_map(values, (b, h, w))).float()
            zero = z_q.new_zeros(())
            counts = torch.bincount(codes, minlength=self.codebook_size)
        return Quantized(z_q, zero, zero, codes.view(b, h, w), batch_perplexity(counts))

    @torch.no_grad()
    def lookup(self, z_e: Tensor) -> Tensor:
        b, _, h, w = z_e.shape
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            digits, _ = self._quantize(z_e)
            return (digits.round().long() * self._basis).sum(1).view(b, h, w)

    def embed(self, codes: Tensor) -> Tensor:
        b, h, w = codes.shape
        flat = codes.reshape(-1, 1).long()
        digits = torch.div(flat, self._basis, rounding_mode="floor") % self._levels.long()
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        values = (digits.float() - half_width) / half_width
        with torch.autocast(device_type=codes.device.type, enabled=False):
            return self.project_out(_to_map(values, (b, h, w)).contiguous()).float()
