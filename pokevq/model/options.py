"""The model's named choices and the FSQ level rule: plain values, so the configuration can check
them without loading torch."""

from __future__ import annotations

import itertools
import math

from pokevq.errors import ConfigError

DOWNSAMPLE_FACTORS = (4, 8, 16)
ARCHITECTURES = ("tile", "conv", "patch")
QUANTIZERS = ("ema", "vq", "fsq")
CODEBOOK_INITS = ("kmeans", "data", "random")
DEAD_CODE_RESTARTS = ("worst", "random", "off")
ENCODER_KERNELS = (1, 3)
# Model options that name one of a few components, checked by TrainConfig and ModelConfig alike.
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
