"""The model's named choices and the FSQ level rule: plain values, so the configuration can check
them without loading torch."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, NoReturn

from pokevq.errors import ConfigError

DOWNSAMPLE_FACTORS = (4, 8, 16)
ARCHITECTURES = ("tile", "conv", "patch")
QUANTIZERS = ("ema", "vq", "fsq")
CODEBOOK_INITS = ("kmeans", "data", "random")
DEAD_CODE_RESTARTS = ("worst", "random", "off")
ENCODER_KERNELS = (1, 3)
# Model options that name one of a few components (check_model).
MODEL_CHOICES = {
    "architecture": ARCHITECTURES,
    "quantizer": QUANTIZERS,
    "codebook_init": CODEBOOK_INITS,
    "dead_code_restart": DEAD_CODE_RESTARTS,
}


def fsq_levels(codebook_size: int) -> tuple[int, ...]:
    """Levels per dimension whose product is exactly `codebook_size`, each 3..8 and as even as possible.

    512 -> (8, 8, 8); 1000 -> (8, 5, 5, 5); 64 -> (8, 8). The FSQ paper's advice is levels of
    5 to 8; a size with a prime factor above 8 cannot be split and is refused.
    """
    best: tuple[int, ...] | None = None
    for dims in range(1, 17):
        for combo in itertools.combinations_with_replacement(range(3, 9), dims):
            if math.prod(combo) != codebook_size:
                continue
            if best is None or (max(combo) - min(combo), -min(combo)) < (max(best) - min(best), -min(best)):
                best = combo
        if best is not None:
            return tuple(sorted(best, reverse=True))
    raise ConfigError(
        f"codebook_size {codebook_size} cannot be an FSQ codebook: it must be a product of levels from 3 to 8 "
        "(e.g. 64, 125, 216, 512, 1000, 4096); pick such a --codebook-size with --quantizer fsq"
    )


def check_model(values: dict[str, Any], fail: Callable[[str, str], NoReturn]) -> None:
    """The model's rules, in one place: `ModelConfig` and the run's model options both call this.

    `values` uses `ModelConfig`'s names (image_size as (H, W)); `fail(name, message)` raises the
    caller's error, so a run's message names the flag and the model's names the field.
    """
    for name in ("hidden_channels", "codebook_size", "embedding_dim"):
        if not _whole(values[name], 1):
            fail(name, f"must be a positive integer; got {values[name]!r}")
    for name in ("num_res_blocks", "code_dim"):
        if not _whole(values[name], 0):
            fail(name, f"must be an integer >= 0; got {values[name]!r}")
    if values["downsample"] not in DOWNSAMPLE_FACTORS:
        fail("downsample", f"must be one of 4, 8, 16; got {values['downsample']!r}")
    if values["encoder_kernel"] not in ENCODER_KERNELS:
        fail("encoder_kernel", f"must be 1 or 3; got {values['encoder_kernel']!r}")
    for name, allowed in MODEL_CHOICES.items():
        if values[name] not in allowed:
            fail(name, f"must be one of {', '.join(allowed)}; got {values[name]!r}")
    if values["quantizer"] == "fsq" and not _fsq_size(values["codebook_size"]):
        fail("codebook_size", f"{values['codebook_size']} cannot be an FSQ codebook with --quantizer fsq: use a "
                              "product of levels from 3 to 8, e.g. 64, 125, 216, 512 or 1000")
    (height, width), down = values["image_size"], values["downsample"]
    if height % down or width % down:
        fail("image_size", f"{height}x{width} must be divisible by downsample {down} in both dimensions")


def _whole(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _fsq_size(codebook_size: int) -> bool:
    try:
        fsq_levels(codebook_size)
    except ConfigError:
        return False
    return True
