"""VQ-VAE for Game Boy frames: conv encoder -> EMA vector quantizer -> conv decoder.

Everything the model needs lives in this one file so it can be read top to bottom:

    x (B,3,H,W) in [0,1]
      -> Encoder        (B,D,H/d,W/d)     continuous latents z_e
      -> VectorQuantizerEMA               nearest codebook vector per position
      -> Decoder        (B,3,H,W)          sigmoid, so recon is in [0,1]

The codebook is learned with exponential moving averages (van den Oord et al. 2017,
appendix A.1) rather than by gradient descent: it converges faster and needs no
codebook loss term. Two additions keep the codebook from collapsing, which is the
usual failure of VQ-VAEs on images with few distinct colours such as Game Boy
frames: the codebook is initialised from encoder outputs of the first training
batch, and codes that stop being used are restarted on random encoder outputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pokevq.errors import ConfigError

# ---------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model; stored in checkpoints via to_dict()."""

    image_size: tuple[int, int] = (144, 160)  # (H, W)
    in_channels: int = 3
    hidden_channels: int = 128
    codebook_size: int = 512
    embedding_dim: int = 64
    downsample: int = 8  # 4, 8 or 16: number of stride-2 stages = log2(downsample)
    num_res_blocks: int = 2
    commitment_cost: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0  # a code whose EMA cluster size falls below this is restarted

    def __post_init__(self) -> None:
        # Checked here so a bad config fails when it is made, not deep inside a conv.
        size = tuple(int(s) for s in self.image_size)
        if len(size) != 2:
            raise ConfigError(f"image_size must be (H, W), got {self.image_size!r}")
        object.__setattr__(self, "image_size", size)
        d = self.downsample
        if d < 2 or d & (d - 1) != 0:
            raise ConfigError(f"downsample must be a power of two such as 4, 8 or 16, got {d}")
        h, w = size
        if h <= 0 or w <= 0 or h % d != 0 or w % d != 0:
            raise ConfigError(
                f"image_size {h}x{w} is not divisible by downsample={d}; "
                f"use an image_size whose height and width are multiples of {d}"
            )
        for name in ("in_channels", "hidden_channels", "codebook_size", "embedding_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_res_blocks < 0:
            raise ConfigError(f"num_res_blocks must be >= 0, got {self.num_res_blocks}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.commitment_cost < 0:
            raise ConfigError(f"commitment_cost must be >= 0, got {self.commitment_cost}")

    @property
    def num_downsamples(self) -> int:
        return int(math.log2(self.downsample))

    @property
    def latent_size(self) -> tuple[int, int]:
        """(h, w) of the code grid."""
        return self.image_size[0] // self.downsample, self.image_size[1] // self.downsample

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (image_size as a list)."""
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Inverse of to_dict. Unknown keys are an error so a typo is not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        d = dict(d)
        if "image_size" in d:
            d["image_size"] = tuple(d["image_size"])
        return cls(**d)


# ---------------------------------------------------------------------------
# helpers


def count_codes(codes: Tensor, codebook_size: int) -> Tensor:
    """How often each code occurs in `codes` (any shape), as a (codebook_size,) long tensor."""
    return torch.bincount(codes.reshape(-1).long(), minlength=codebook_size)


def _sample_rows(x: Tensor, n: int) -> Tensor:
    """n random rows of x; with replacement only when x has fewer than n rows."""
    if x.shape[0] >= n:
        idx = torch.randperm(x.shape[0], device=x.device)[:n]
    else:
        idx = torch.randint(0, x.shape[0], (n,), device=x.device)
    return x[idx]


# ---------------------------------------------------------------------------
# vector quantizer


class VectorQuantizerEMA(nn.Module):
    """Nearest-neighbour quantizer whose codebook follows EMA k-means updates.

    The codebook and its EMA statistics are buffers, not parameters: the optimizer
    never touches them, they move only in training-mode forward passes, and they are
    saved in the state_dict. All maths here runs in fp32, even under autocast,
    because bf16 distances are too coarse to pick the right nearest code.
    """

    def __init__(
        self,
        codebook_size: int,
        embedding_dim: int,
        decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.embedding_dim = embedding_dim
        self.decay = decay
        self.dead_code_threshold = dead_code_threshold
        self.eps = eps  # Laplace smoothing so a code with no members never divides by zero
        embedding = torch.randn(codebook_size, embedding_dim)
        self.register_buffer("embedding", embedding)
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed_sum", embedding.clone())
        # A buffer, not a Python bool, so a resumed run does not re-initialise.
        self.register_buffer("initialized", torch.tensor(False))
        # Host-side copy of `initialized`, so training steps need not read it off the GPU.
        self._initialized_cache = False

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Quantize (B,D,h,w) latents.

        Returns (z_q, commit_loss, codes, perplexity): z_q has z_e's shape, in fp32,
        and passes gradients straight through to z_e; codes is (B,h,w) long.
        """
        b, d, h, w = z_e.shape
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z = z_e.float()
            flat = z.permute(0, 2, 3, 1).reshape(-1, d)
            flat_detached = flat.detach()
            first_batch = self.training and not self._is_initialized()
            if first_batch:
                self._init_from_data(flat_detached)
            codes = self._nearest(flat_detached)
            counts = torch.bincount(codes, minlength=self.codebook_size)
            z_q = F.embedding(codes, self.embedding.float()).view(b, h, w, d).permute(0, 3, 1, 2)
            # The init batch is its own update: stats were just set from it.
            if self.training and not first_batch:
                self._ema_update(flat_detached, codes, counts)
                self._restart_dead_codes(flat_detached)
            commit_loss = F.mse_loss(z, z_q.detach())
            z_q = z + (z_q - z).detach()  # straight-through: forward z_q, backward identity
            probs = counts.float() / codes.numel()
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return z_q, commit_loss, codes.view(b, h, w), perplexity

    def _is_initialized(self) -> bool:
        if not self._initialized_cache:
            self._initialized_cache = bool(self.initialized)
        return self._initialized_cache

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._initialized_cache = False  # re-read the loaded buffer on the next step

    @torch.no_grad()
    def lookup(self, z_e: Tensor) -> Tensor:
        """Code indices (B,h,w) for latents (B,D,h,w); never updates the codebook."""
        b, d, h, w = z_e.shape
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            flat = z_e.float().permute(0, 2, 3, 1).reshape(-1, d)
            return self._nearest(flat).view(b, h, w)

    def embed(self, codes: Tensor) -> Tensor:
        """Codebook vectors (B,D,h,w) for code indices (B,h,w)."""
        return F.embedding(codes.long(), self.embedding.float()).permute(0, 3, 1, 2).contiguous()

    def _nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest code for each row, via ||z||^2 - 2 z.e + ||e||^2 (no N*K*D tensor)."""
        emb = self.embedding.float()
        dist = (
            flat.pow(2).sum(1, keepdim=True)
            - 2.0 * flat @ emb.t()
            + emb.pow(2).sum(1).unsqueeze(0)
        )
        return dist.argmin(dim=1)

    @torch.no_grad()
    def _init_from_data(self, flat: Tensor) -> None:
        """Put every code on a random encoder output so none start out of reach of the data."""
        sample = _sample_rows(flat, self.codebook_size)
        # Noise separates duplicates when the batch has fewer vectors than codes.
        noise_scale = 1e-3 * flat.std(correction=0).clamp_min(1e-3)
        sample = sample + torch.randn_like(sample) * noise_scale
        self.embedding.copy_(sample)
        # Each code starts with the mass of one vector, as if it had been seen once.
        self.cluster_size.fill_(1.0)
        self.embed_sum.copy_(sample)
        self.initialized.fill_(True)
        self._initialized_cache = True

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, codes: Tensor, counts: Tensor) -> None:
        """One EMA k-means step: codes move towards the mean of the vectors assigned to them."""
        batch_sum = torch.zeros_like(self.embed_sum).index_add_(0, codes, flat)
        self.cluster_size.mul_(self.decay).add_(counts.float(), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(batch_sum, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embedding.copy_(self.embed_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor) -> None:
        """Move codes that are (almost) never chosen onto random encoder outputs of this batch.

        Written with torch.where rather than boolean indexing so it never waits on the GPU.
        """
        if self.dead_code_threshold <= 0:
            return
        dead = self.cluster_size < self.dead_code_threshold
        sample = flat[torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)]
        # Enough mass that the code survives as long as it is used at the threshold rate.
        mass = max(1.0, self.dead_code_threshold)
        rows = dead.unsqueeze(1)
        self.embedding.copy_(torch.where(rows, sample, self.embedding))
        self.embed_sum.copy_(torch.where(rows, sample * mass, self.embed_sum))
        self.cluster_size.copy_(torch.where(dead, torch.full_like(self.cluster_size, mass), self.cluster_size))


# ---------------------------------------------------------------------------
# encoder / decoder


class ResBlock(nn.Module):
    """Pre-activation residual block: 3x3 conv then 1x1 conv, added to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Encoder(nn.Module):
    """Image -> latents: stem, log2(downsample) stride-2 stages, res blocks, 1x1 projection."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.hidden_channels
        self.stem = nn.Conv2d(config.in_channels, c, 3, padding=1)
        self.down = nn.ModuleList(
            [nn.Conv2d(c, c, 4, stride=2, padding=1) for _ in range(config.num_downsamples)]
        )
        self.res = nn.Sequential(*[ResBlock(c) for _ in range(config.num_res_blocks)])
        self.proj = nn.Conv2d(c, config.embedding_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x * 2.0 - 1.0)  # centre [0,1] pixels on zero; ReLU nets train faster
        for conv in self.down:
            x = conv(F.relu(x))
        x = self.res(x)
        return self.proj(F.relu(x))


class Decoder(nn.Module):
    """Latents -> image: mirror of the encoder with ConvTranspose2d(4, 2, 1) stages."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.hidden_channels
        self.proj = nn.Conv2d(config.embedding_dim, c, 1)
        self.res = nn.Sequential(*[ResBlock(c) for _ in range(config.num_res_blocks)])
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(c, c, 4, stride=2, padding=1) for _ in range(config.num_downsamples)]
        )
        self.out = nn.Conv2d(c, config.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """Returns logits; the VQVAE applies the sigmoid."""
        x = self.proj(z)
        x = self.res(x)
        for conv in self.up:
            x = conv(F.relu(x))
        return self.out(F.relu(x))


# ---------------------------------------------------------------------------
# model


class VQOutput(NamedTuple):
    recon: Tensor  # (B,C,H,W) in [0,1], dtype of the input
    loss: Tensor  # recon_loss + commitment_cost * commit_loss
    recon_loss: Tensor  # pixel MSE
    commit_loss: Tensor  # MSE(z_e, sg(z_q))
    codes: Tensor  # (B,h,w) long
    perplexity: Tensor  # exp(entropy) of code usage in this batch, detached


class VQVAE(nn.Module):
    """Encoder + EMA vector quantizer + decoder; forward returns the losses too."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = VectorQuantizerEMA(
            config.codebook_size,
            config.embedding_dim,
            decay=config.ema_decay,
            dead_code_threshold=config.dead_code_threshold,
        )
        self.decoder = Decoder(config)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """He init for the ReLU convs. PyTorch's default init shrinks the signal layer by
        layer, and a small VQ-VAE then sits on the "predict the mean colour" plateau for
        many steps before it starts using its codes.
        """
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.ConvTranspose2d):
            # Weight is (in, out, k, k), so "fan_out" is in * k * k: every tap counted, as
            # for a plain conv. That keeps the first logits small (the exact stride-2 fan-in
            # would be 4x larger), which trained faster in tests.
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> VQOutput:
        """x: (B,C,H,W) float in [0,1]. In training mode this also updates the codebook."""
        self._check_input(x)
        z_e = self.encoder(x)
        z_q, commit_loss, codes, perplexity = self.quantizer(z_e)
        # Sigmoid in fp32: bf16 steps of 1/256 near 1.0 would cap PSNR around 50 dB.
        recon = torch.sigmoid(self.decoder(z_q).float()).to(x.dtype)
        recon_loss = F.mse_loss(recon.float(), x.float())
        loss = recon_loss + self.config.commitment_cost * commit_loss
        return VQOutput(recon, loss, recon_loss, commit_loss, codes, perplexity.detach())

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Code indices (B, H/d, W/d) long. Never updates the codebook, even in train mode."""
        self._check_input(x)
        return self.quantizer.lookup(self.encoder(x))

    @torch.no_grad()
    def decode_codes(self, codes: Tensor) -> Tensor:
        """Image (B,C,H,W) in [0,1] from code indices (B, H/d, W/d)."""
        return torch.sigmoid(self.decoder(self.quantizer.embed(codes)).float())

    def num_parameters(self) -> int:
        """Trainable parameters (the codebook is a buffer and is not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check_input(self, x: Tensor) -> None:
        # Other sizes would run but give codes of a different grid; fail loudly instead.
        expected = (self.config.in_channels, *self.config.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected input of shape (B, {expected[0]}, {expected[1]}, {expected[2]}) "
                f"to match image_size={self.config.image_size}, got {tuple(x.shape)}"
            )
