"""From manifest rows to training items: read through the cache, decode, skip and count bad frames.

Bad frames travel with the batch (not in dataset state) so counts survive DataLoader
worker processes and reach the log and the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pokevq.data.decoded import DecodedFrameStore
from pokevq.data.expand import expand
from pokevq.data.frames import decode_frame_uint8
from pokevq.data.source import FrameSource
from pokevq.errors import (
    FATAL_STORAGE_ERRORS,
    FrameDecodeError,
    ObjectNotFoundError,
    StorageError,
)


@dataclass
class Batch:
    """The good frames of one batch, as float images or (packed frames) as palette indices, and what was skipped."""

    images: torch.Tensor | None  # (B, 3, H, W) float in [0, 1]; None when every frame was bad or `indices` is set
    keys: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    hits: int = 0
    misses: int = 0
    source: tuple[int, int] | None = None  # streaming: (DataLoader worker, its batch number), for resume
    indices: torch.Tensor | None = None  # (B, h, w) uint8 palette indices of packed frames
    palettes: torch.Tensor | None = None  # (B, K, 3) uint8: each frame's palette
    image_hw: tuple[int, int] | None = None  # the model's input size the indices are expanded to

    def __len__(self) -> int:
        return len(self.keys)

    def pixels(self, device: torch.device | str) -> torch.Tensor | None:
        """(B, 3, H, W) float in [0, 1] on `device`; palette frames are expanded there. None: no good frame."""
        if self.indices is not None and self.palettes is not None and self.image_hw is not None:
            return expand(self.indices.to(device, non_blocking=True), self.palettes.to(device, non_blocking=True),
                          self.image_hw)
        return None if self.images is None else self.images.to(device, non_blocking=True)

    def pin_memory(self) -> Batch:
        for name in ("images", "indices", "palettes"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.pin_memory())
        return self


class FrameDataset(Dataset):
    """Frames of one split; an item is (tensor or None, key, status) with status 'hit', 'miss' or a skip reason.

    Decoded frames are kept in a `DecodedFrameStore` next to the byte cache (when the split
    fits the cache), so only the first pass decodes PNGs; `__getitems__` then serves a whole
    batch with one read of the memory-mapped rows.
    """

    def __init__(
        self, manifest: pd.DataFrame, source: FrameSource, image_size: tuple[int, int], *, decoded: bool = True
    ) -> None:
        self.keys = manifest["key"].tolist()
        self.etags = manifest["etag"].astype(str).tolist()
        self.source = source
        self.image_size = image_size
        self.decoded = (
            DecodedFrameStore.open(source.cache, source.storage.namespace, self.keys, self.etags, image_size)
            if decoded
            else None
        )

    def __len__(self) -> int:
        return len(self.keys)

    def decoded_share(self) -> float:
        """Share of this split's frames already in the decoded store (0 without a store)."""
        if self.decoded is None or not self.keys:
            return 0.0
        return self.decoded.filled() / len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, str, str]:
        key = self.keys[index]
        if self.decoded is not None:
            row = self.decoded.get(index)
            if row is not None:
                return _to_tensor(row), key, "hit"
        if self.source.shards is None:
            self.source.shards_for(self.keys)
        try:
            data, hit = self.source.read(key, self.etags[index])
        except FATAL_STORAGE_ERRORS:
            raise
        except ObjectNotFoundError:
            return None, key, "object disappeared from storage"
        except StorageError as exc:
            return None, key, f"unreadable: {exc}"
        try:
            frame = decode_frame_uint8(data, self.image_size)
        except FrameDecodeError as exc:
            return None, key, str(exc)
        if self.decoded is not None:
            self.decoded.put(index, frame)
        return _to_tensor(frame), key, "hit" if hit else "miss"

    def __getitems__(self, indices: Sequence[int]) -> list:
        """A batch: straight from the decoded store when every row is there, else item by item."""
        if self.decoded is None or not len(indices) or not bool(self.decoded.ready(indices).all()):
            return [self[i] for i in indices]
        rows = self.decoded.get_many(indices)
        images = _batch_tensor(rows)
        items = _PreparedItems((None, self.keys[i], "hit") for i in indices)
        items.images = images
        return items


class _PreparedItems(list):
    """Items of a batch whose images are already one (B, 3, H, W) tensor."""

    images: torch.Tensor


def _to_tensor(frame: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1], exactly as `decode_frame` returns it."""
    out = np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32)
    out /= 255.0
    return torch.from_numpy(out)


def _batch_tensor(rows: np.ndarray) -> torch.Tensor:
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


def collate_frames(items: Sequence[tuple[torch.Tensor | None, str, str]]) -> Batch:
    if isinstance(items, _PreparedItems):
        return Batch(images=items.images, keys=[key for _, key, _ in items], hits=len(items))
    good = [tensor for tensor, _, _ in items if tensor is not None]
    skipped = [(key, status) for tensor, key, status in items if tensor is None]
    return Batch(
        images=torch.stack(good) if good else None,
        keys=[key for tensor, key, _ in items if tensor is not None],
        skipped=skipped,
        hits=sum(1 for tensor, _, status in items if tensor is not None and status == "hit"),
        misses=sum(1 for tensor, _, status in items if tensor is not None and status == "miss"),
    )
