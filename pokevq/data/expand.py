"""Palette frames to the model's input, on the model's device: one gather, then the resize training uses.

A batch of packed frames crosses from the data workers as 1 byte a pixel plus each frame's
palette (`Batch.indices`, `Batch.palettes`); the float RGB the model consumes is 12 bytes a pixel
and is made here, where it is cheap (a GPU's gather), not on the data path's cores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def device_resizable(frame_hw: tuple[int, int], image_hw: tuple[int, int]) -> bool:
    """Whether `expand` can resize these frames to `image_hw` exactly as `frames.resize_rgb` does.

    An integer shrink is PIL's BOX filter (the mean of each block, rounded), an integer
    enlargement its NEAREST; any other ratio goes through Pillow on the CPU instead.
    """
    (h, w), (th, tw) = frame_hw, image_hw
    return (h % th == 0 and w % tw == 0) or (th % h == 0 and tw % w == 0)


def expand(indices: torch.Tensor, palettes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) uint8 indices and (B, K, 3) uint8 palettes -> (B, 3, H, W) float32 in [0, 1]."""
    b, h, w = indices.shape
    table = palettes.permute(0, 2, 1).float()  # (B, 3, K): each frame's colours, channel first
    where = indices.long().view(b, 1, h * w).expand(b, 3, h * w)
    images = torch.gather(table, 2, where).view(b, 3, h, w)  # channel-first float in one pass
    th, tw = image_hw
    if (h, w) != (th, tw):
        if h % th == 0 and w % tw == 0:
            # Pillow's BOX: rows first, then columns, each pass rounded half up to a whole 8-bit value.
            if w != tw:
                images = torch.floor(F.avg_pool2d(images, (1, w // tw)) + 0.5)
            if h != th:
                images = torch.floor(F.avg_pool2d(images, (h // th, 1)) + 0.5)
        else:
            images = F.interpolate(images, size=(th, tw), mode="nearest")
    return images.div_(255.0).contiguous()
