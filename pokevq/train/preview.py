"""Reconstructions next to their originals: the picture a person checks a tokenizer by."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

SCALE = 2


def image_grid(*rows: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """One row of frames per argument (originals on top, reconstructions under them): (3, H', W') in [0, 1]."""
    count, channels, height, width = rows[0].shape
    grid = torch.ones(channels, len(rows) * (height + gap) + gap, count * width + (count + 1) * gap)
    for r, row in enumerate(rows):
        y = gap + r * (height + gap)
        for i in range(count):
            x = gap + i * (width + gap)
            grid[:, y : y + height, x : x + width] = row[i]
    return grid.clamp(0, 1)


def grid_png(*rows: torch.Tensor) -> bytes:
    """The grid as a PNG, upscaled with nearest neighbours so pixel art stays crisp."""
    grid = image_grid(*rows)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array).resize((array.shape[1] * SCALE, array.shape[0] * SCALE), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
