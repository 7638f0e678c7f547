"""One training batch as it crosses from a DataLoader worker: good frames, and what was skipped and why.

Bad frames travel with the batch (not in dataset state) so counts survive DataLoader worker
processes and reach the log and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pokevq.data.expand import expand, unpack


@dataclass
class Batch:
    """The good frames of one batch, as float images or (packed frames) as palette indices, and what was skipped."""

    images: torch.Tensor | None  # (B, 3, H, W) float in [0, 1]; None when every frame was bad or `indices` is set
    keys: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    hits: int = 0
    misses: int = 0
    worker_batch: tuple[int, int] | None = None  # (DataLoader worker, its batch number), for resume
    indices: torch.Tensor | None = None  # (B, n) uint8: packed frames' palette indices, `bits` each
    palettes: torch.Tensor | None = None  # (B, K, 3) uint8: each frame's palette
    image_hw: tuple[int, int] | None = None  # the model's input size the indices are expanded to
    frame_hw: tuple[int, int] | None = None  # the frames' own size (h, w)
    bits: int = 8  # 2 or 4: every frame's indices are packed that many bits a pixel; 8: a byte each

    def __len__(self) -> int:
        return len(self.keys)

    def pixels(self, device: torch.device | str) -> torch.Tensor | None:
        """(B, 3, H, W) float in [0, 1] on `device`; palette frames are expanded there. None: no good frame."""
        if self.indices is not None and self.palettes is not None and self.image_hw and self.frame_hw:
            indices = unpack(self.indices.to(device, non_blocking=True), self.bits, self.frame_hw)
            return expand(indices, self.palettes.to(device, non_blocking=True), self.image_hw)
        return None if self.images is None else self.images.to(device, non_blocking=True)

    def pin_memory(self) -> Batch:
        for name in ("images", "indices", "palettes"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.pin_memory())
        return self


def batch_tensor(rows: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]; in a worker, allocated in shared memory."""
    b, h, w, c = rows.shape
    if torch.utils.data.get_worker_info() is not None:
        # As torch's default_collate does: the batch crosses to the main process without a copy.
        storage = torch.empty(0)._typed_storage()._new_shared(b * c * h * w, device="cpu")
        out = torch.empty(0).new(storage).resize_(b, c, h, w)
    else:
        out = torch.empty((b, c, h, w), dtype=torch.float32)
    out.copy_(torch.from_numpy(rows).permute(0, 3, 1, 2))
    out.div_(255.0)
    return out
