"""Palette frames to the model's input, on the model's device: unpack, one gather, then the resize training uses.

A batch of packed frames crosses from the data workers as their palette indices, still packed
2 or 4 bits a pixel when the batch's frames share that width (else a byte each), plus each
frame's palette (`Batch.indices`, `Batch.palettes`); the float RGB the model consumes is 12 bytes
a pixel and is made here, where it is cheap (a GPU's shifts and gather), not on the data path's cores.
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


def unpack(packed: torch.Tensor, bits: int, frame_hw: tuple[int, int]) -> torch.Tensor:
    """(B, n) bytes of palette indices, `bits` each (2, 4 or 8), least significant first -> (B, h, w) uint8."""
    h, w = frame_hw
    b = packed.shape[0]
    if bits == 8:
        return packed.reshape(b, h, w)
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    flat = (packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # (B, n, 8 // bits): each byte's pixels in order
    return flat.reshape(b, -1)[:, : h * w].reshape(b, h, w)


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
