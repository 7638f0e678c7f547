"""Reconstructions next to their originals: the picture a person checks a tokenizer by."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

SCALE = 2


def image_grid(originals: torch.Tensor, reconstructions: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """Originals on the top row, reconstructions under them: a (3, H', W') tensor in [0, 1]."""
    count, channels, height, width = originals.shape
    grid = torch.ones(channels, 2 * height + 3 * gap, count * width + (count + 1) * gap)
    for i in range(count):
        x = gap + i * (width + gap)
        grid[:, gap : gap + height, x : x + width] = originals[i]
        grid[:, 2 * gap + height : 2 * gap + 2 * height, x : x + width] = reconstructions[i]
    return grid.clamp(0, 1)


def grid_png(originals: torch.Tensor, reconstructions: torch.Tensor) -> bytes:
    """The grid as a PNG, upscaled with nearest neighbours so pixel art stays crisp."""
    grid = image_grid(originals, reconstructions)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array).resize((array.shape[1] * SCALE, array.shape[0] * SCALE), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
