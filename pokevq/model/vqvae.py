"""VQ-VAE for Game Boy frames: encoder -> quantizer -> decoder.

Everything the model is made of can be read top to bottom here (the quantizers live in
`pokevq.model.quantizers`):

    x (B,3,H,W) in [0,1]
      -> encoder       (B,D,H/d,W/d)   continuous latents z_e, one per d x d patch
      -> quantizer                     one code per position (EMA codebook, VQ or FSQ)
      -> decoder       (B,3,H,W)       sigmoid, so recon is in [0,1]

Three architectures, chosen by `ModelConfig.architecture`:

- ``patch`` (the default): the codes are pixel patches, seeded before training from the training
  frames' d x d patches on the grid and at every other offset (pokevq.model.patches), so a patch
  the training frames hold, on the grid or scrolled off it, is coded exactly and any other gets
  its nearest patch. There is no learned encoder. The decoder draws each code's pixels and adds
  a correction computed from the neighbouring codes (3x3 residual blocks on the code grid, zero at
  the start), trained on frames shifted by a random phase of the grid. Measured against the tile
  dictionary a user builds in seconds, it is the only one of the three that beats it
  (benchmarks/QUALITY*.md).
- ``tile`` (the default): each d x d patch is embedded by one linear map (a ViT-style patch
  embedding, written as PixelUnshuffle + 1x1 conv), refined by residual blocks on the
  latent grid, and the decoder ends in a 1x1 conv to d*d*3 values per position and a
  PixelShuffle. A Game Boy screen is drawn from 8x8 tiles, so at d=8 a code stands for
  exactly one tile. With ``encoder_kernel=1`` (the default) the encoder blocks are 1x1, so
  a tile's code depends on that tile alone and does not flicker when its neighbours change
  (token stability); ``encoder_kernel=3`` makes them 3x3, so a code sees the tiles around
  it (a sprite or a scrolled tile spans several). The decoder's 3x3 blocks see the neighbouring codes. All
  convolutions run on the code grid, which makes it ~40x cheaper per frame than ``conv``.
- ``conv``: the classic strided-conv VQ-VAE (van den Oord et al. 2017) with
  full-resolution convolutions; pokevq's first model, kept so its checkpoints still load.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple, NoReturn

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pokevq.config import TrainConfig
from pokevq.errors import ConfigError
from pokevq.model.options import ARCHITECTURES, check_model
from pokevq.model.patches import PatchCodebook, patch_rows, seed_patches
from pokevq.model.quantizers import (
    FSQ,
    VectorQuantizer,
    VectorQuantizerEMA,
    batch_perplexity,
    count_codes,
)

__all__ = ["ARCHITECTURES", "ModelConfig", "VQOutput", "VQVAE", "VectorQuantizerEMA", "count_codes"]

# What a checkpoint written before these fields existed was: the conv model with a data-initialised
# EMA codebook and random restarts of codes under one use per batch.
LEGACY_MODEL_FIELDS: dict[str, Any] = {
    "architecture": "conv",
    "quantizer": "ema",
    "codebook_init": "data",
    "dead_code_restart": "random",
    "dead_code_threshold": 1.0,
    "code_dim": 0,
    "cosine": False,
}
# Fields added after the one above, with the value every checkpoint written before them was trained with.
ADDED_MODEL_FIELDS: dict[str, Any] = {
    "encoder_kernel": 1,
}


def saved_model_fields(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's model config with the fields it predates filled in as it was trained."""
    filled = {**LEGACY_MODEL_FIELDS, **saved} if "architecture" not in saved else dict(saved)
    return {**ADDED_MODEL_FIELDS, **filled}

# ---------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model; stored in checkpoints via to_dict()."""

    image_size: tuple[int, int] = (144, 160)  # (H, W)
    in_channels: int = 3
    hidden_channels: int = 128
    codebook_size: int = 65536
    embedding_dim: int = 64
    downsample: int = 8  # 4, 8 or 16: the side of the patch one code stands for
    num_res_blocks: int = 2
    encoder_kernel: int = 1  # 1: a tile's code from its own pixels; 3: from its 3x3 neighbourhood of tiles
    architecture: str = "patch"  # patch, tile or conv, see the module docstring
    quantizer: str = "ema"  # ema, vq or fsq (pokevq.model.quantizers)
    codebook_init: str = "kmeans"  # kmeans, data or random
    dead_code_restart: str = "worst"  # worst, random or off
    dead_code_threshold: float = 0.01  # a code used less than this many times per batch (EMA) is dead
    code_dim: int = 0  # > 0: look codes up in a learned projection of this many dimensions
    cosine: bool = False  # look codes up on the unit sphere (cosine similarity)
    commitment_cost: float = 0.25
    ema_decay: float = 0.99

    def __post_init__(self) -> None:
        # Checked here so a bad config fails when it is made, not deep inside a conv.
        size = tuple(int(s) for s in self.image_size)
        if len(size) != 2:
            raise ConfigError(f"image_size must be (H, W), got {self.image_size!r}")
        object.__setattr__(self, "image_size", size)
        if min(size) <= 0:
            raise ConfigError(f"image_size must be positive, got {self.image_size!r}")
        if self.in_channels < 1:
            raise ConfigError(f"in_channels must be at least 1, got {self.in_channels}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.commitment_cost < 0:
            raise ConfigError(f"commitment_cost must be >= 0, got {self.commitment_cost}")
        check_model(asdict(self), _refuse)

    @classmethod
    def for_run(cls, config: TrainConfig) -> ModelConfig:
        """The model a run trains: its model options, everything else at the defaults above."""
        return cls(**config.model.model_options())

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
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of to_dict. Unknown keys are an error so a typo is not silently ignored.

        A dict from a checkpoint older than a field gets the value that checkpoint was trained with.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        d = saved_model_fields(d)
        if "image_size" in d:
            d["image_size"] = tuple(d["image_size"])
        return cls(**d)


def _refuse(name: str, message: str) -> NoReturn:
    raise ConfigError(f"{name} {message}")


# ---------------------------------------------------------------------------
# encoder / decoder


class ResBlock(nn.Module):
    """Pre-activation residual block: a kxk conv then a 1x1 conv, added to the input."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class TileEncoder(nn.Module):
    """Image -> latents: each d x d patch embedded linearly, then per-position residual blocks."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, d = config.hidden_channels, config.downsample
        self.patches = nn.PixelUnshuffle(d)
        self.embed = nn.Conv2d(config.in_channels * d * d, c, 1)
        self.res = nn.Sequential(*[ResBlock(c, kernel=config.encoder_kernel) for _ in range(config.num_res_blocks)])
        self.proj = nn.Conv2d(c, config.embedding_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(self.patches(x * 2.0 - 1.0))  # centre [0,1] pixels on zero
        return self.proj(F.relu(self.res(x)))


class TileDecoder(nn.Module):
    """Latents -> image: residual blocks over neighbouring codes, then d*d*C values per code."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, d = config.hidden_channels, config.downsample
        self.proj = nn.Conv2d(config.embedding_dim, c, 1)
        self.res = nn.Sequential(*[ResBlock(c, kernel=3) for _ in range(config.num_res_blocks)])
        self.out = nn.Conv2d(c, config.in_channels * d * d, 1)
        self.pixels = nn.PixelShuffle(d)

    def forward(self, z: Tensor) -> Tensor:
        """Returns logits; the VQVAE applies the sigmoid."""
        return self.pixels(self.out(F.relu(self.res(self.proj(z)))))


class PatchDecoder(nn.Module):
    """Codes -> image for the ``patch`` architecture: each code's own pixels, plus a correction the
    residual blocks compute from the neighbouring codes (zero at the start: the seeded dictionary)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, d = config.hidden_channels, config.downsample
        width = config.in_channels * d * d
        self.proj = nn.Conv2d(width, c, 1)
        self.res = nn.Sequential(*[ResBlock(c, kernel=3) for _ in range(config.num_res_blocks)])
        self.out = nn.Conv2d(c, width, 1)
        self.pixels = nn.PixelShuffle(d)

    def forward(self, patches: Tensor) -> Tensor:
        """patches (B, C*d*d, h, w) in [0,1] -> image (B,C,H,W) in [0,1]."""
        residual = self.out(F.relu(self.res(self.proj(patches * 2.0 - 1.0))))
        return self.pixels(patches + residual).clamp(0.0, 1.0)


class ConvEncoder(nn.Module):
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


class ConvDecoder(nn.Module):
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


def build_quantizer(config: ModelConfig) -> nn.Module:
    if config.quantizer == "fsq":
        return FSQ(config.codebook_size, config.embedding_dim)
    kind = VectorQuantizerEMA if config.quantizer == "ema" else VectorQuantizer
    return kind(
        config.codebook_size,
        config.embedding_dim,
        code_dim=config.code_dim,
        cosine=config.cosine,
        commitment_cost=config.commitment_cost,
        decay=config.ema_decay,
        codebook_init=config.codebook_init,
        dead_code_restart=config.dead_code_restart,
        dead_code_threshold=config.dead_code_threshold,
    )


# ---------------------------------------------------------------------------
# model


class VQOutput(NamedTuple):
    recon: Tensor  # (B,C,H,W) in [0,1], dtype of the input
    loss: Tensor  # recon_loss + the quantizer's loss terms (commitment, codebook)
    recon_loss: Tensor  # pixel MSE
    commit_loss: Tensor  # MSE(z_e, sg(z_q)) in the lookup space; 0 for FSQ
    codes: Tensor  # (B,h,w) long
    perplexity: Tensor  # exp(entropy) of code usage in this batch, detached


class VQVAE(nn.Module):
    """Encoder + quantizer + decoder; forward returns the losses too."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        tile = config.architecture == "tile"
        self.patch = config.architecture == "patch"
        if self.patch:
            # No learned encoder: a code is looked up from the patch's own pixels (pokevq.model.patches).
            self.quantizer: nn.Module = PatchCodebook(config.codebook_size, config.downsample, config.in_channels)
            self.decoder: nn.Module = PatchDecoder(config)
            self.apply(self._init_weights)
            nn.init.zeros_(self.decoder.out.weight)
            return
        self.encoder = TileEncoder(config) if tile else ConvEncoder(config)
        self.quantizer = build_quantizer(config)
        self.decoder = TileDecoder(config) if tile else ConvDecoder(config)
        self.apply(self._init_weights)
        if tile:
            # Every frame starts as flat grey: random logits of He init saturate the sigmoid
            # in noise the decoder must first unlearn (7x slower to the same loss in tests).
            nn.init.zeros_(self.decoder.out.weight)

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

    @property
    def needs_seeding(self) -> bool:
        """True for a patch codebook not yet seeded from the training frames (`seed_codebook`)."""
        return self.patch and not self.quantizer.seeded

    @torch.no_grad()
    def seed_codebook(self, frames: Any) -> int:
        """Seed a patch codebook from batches of (B,C,H,W) frames in [0,1]; returns the codes filled."""
        uint8 = ((b.float().clamp(0, 1) * 255).round().to(torch.uint8) for b in frames)
        self.quantizer.seed(seed_patches(uint8, self.config.codebook_size, self.config.downsample))
        return int(self.quantizer.filled)

    def _patch_codes(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        d = self.config.downsample
        rows = patch_rows((x.float().clamp(0, 1) * 255).round().to(torch.uint8), d)
        if not self.quantizer.seeded:  # no seeding pass (a bare forward): this batch's patches
            self.seed_codebook([x])
        return self.quantizer.lookup(rows).view(b, h // d, w // d)

    def patch_codes_by_search(self, x: Tensor) -> Tensor:
        """`encode` for a patch codebook without its hash: plain tensor operations, as TorchScript can trace them."""
        b, _, h, w = x.shape
        d = self.config.downsample
        rows = patch_rows((x.float().clamp(0, 1) * 255).round().to(torch.uint8), d)
        return self.quantizer.search(rows).view(b, h // d, w // d)

    def _patch_image(self, codes: Tensor) -> Tensor:
        b, h, w = codes.shape
        pixels = self.quantizer.pixels(codes).view(b, h, w, -1).permute(0, 3, 1, 2)
        return self.decoder(pixels)

    def _patch_forward(self, x: Tensor) -> VQOutput:
        # No shift augmentation: trained on frames at a random grid phase, the correction cost µCity 2.2 dB and
        # the classic frames 14 dB (it cannot tell an exact code from an approximate one). On the frames as they
        # are, it learns only what the codebook cannot hold of the training frames, and stays at zero otherwise.
        codes = self._patch_codes(x)
        recon = self._patch_image(codes).to(x.dtype)
        recon_loss = F.mse_loss(recon.float(), x.float())
        perplexity = batch_perplexity(count_codes(codes, self.config.codebook_size))
        return VQOutput(recon, recon_loss, recon_loss, recon_loss.new_zeros(()), codes, perplexity)

    def forward(self, x: Tensor) -> VQOutput:
        """x: (B,C,H,W) float in [0,1]. In training mode this also updates the codebook."""
        self._check_input(x)
        if self.patch:
            return self._patch_forward(x)
        z_e = self.encoder(x)
        quantized = self.quantizer(z_e)
        # Sigmoid in fp32: bf16 steps of 1/256 near 1.0 would cap PSNR around 50 dB.
        recon = torch.sigmoid(self.decoder(quantized.z_q).float()).to(x.dtype)
        recon_loss = F.mse_loss(recon.float(), x.float())
        loss = recon_loss + quantized.loss
        return VQOutput(recon, loss, recon_loss, quantized.commit_loss, quantized.codes, quantized.perplexity)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Code indices (B, H/d, W/d) long. Never updates the codebook, even in train mode."""
        self._check_input(x)
        if self.patch:
            return self._patch_codes(x)
        return self.quantizer.lookup(self.encoder(x))

    @torch.no_grad()
    def decode_codes(self, codes: Tensor) -> Tensor:
        """Image (B,C,H,W) in [0,1] from code indices (B, H/d, W/d)."""
        if self.patch:
            return self._patch_image(codes).float()
        return torch.sigmoid(self.decoder(self.quantizer.embed(codes)).float())

    def num_parameters(self) -> int:
        """Trainable parameters (an EMA codebook is a buffer and is not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check_input(self, x: Tensor) -> None:
        # Other sizes would run but give codes of a different grid; fail loudly instead.
        expected = (self.config.in_channels, *self.config.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected input of shape (B, {expected[0]}, {expected[1]}, {expected[2]}) "
                f"to match image_size={self.config.image_size}, got {tuple(x.shape)}"
            )
