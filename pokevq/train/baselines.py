"""Tile dictionaries a learned tokenizer must beat, scored with the model's own metrics.

Each one gives every d x d tile of a frame one code, as the model does, and decodes a code to
a fixed tile:

- **k-means** of the training tiles, at the model's codebook size and at 512 (the old default's
  budget): the floors a learned tokenizer must clear. Built in seconds.
- **exact dictionary**: every distinct training tile is a code, and a tile gets its nearest
  training tile: the bound of any tokenizer that codes each tile from its own pixels alone.

At a codebook size of at least the distinct training tiles, k-means is the exact dictionary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pokevq.train.metrics import TileCounter, tile_rows, to_uint8

SMALL_KMEANS = 512  # the old default's codebook: a learned tokenizer should be far above its k-means
KMEANS_ITERATIONS = 10
_DISTANCE_BUDGET = 1 << 24  # distance-matrix entries per chunk: bounds memory at any codebook size


@dataclass(frozen=True)
class TileDictionary:
    """`tiles` (K, 3*d*d) in [0, 1]: code k decodes to tile k."""

    name: str
    tiles: Tensor
    tile: int

    @property
    def size(self) -> int:
        return int(self.tiles.shape[0])

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """(B,3,H,W) in [0,1] -> (B, H/d, W/d) codes of the nearest tiles."""
        b, _, h, w = frames.shape
        # Frames repeat their tiles: look each distinct tile up once.
        distinct, inverse = torch.unique(tile_rows(to_uint8(frames), self.tile), dim=0, return_inverse=True)
        found = nearest(distinct.float() / 255, self.tiles.to(frames.device))
        return found[inverse].view(b, h // self.tile, w // self.tile)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """(B,h,w) codes -> (B,3,H,W) frames."""
        b, h, w = codes.shape
        rows = self.tiles.to(codes.device)[codes.reshape(-1)]
        return F.pixel_shuffle(rows.view(b, h, w, -1).permute(0, 3, 1, 2), self.tile)


def nearest(rows: Tensor, tiles: Tensor) -> Tensor:
    """Index of the nearest tile (L2) for every row, in chunks that keep memory bounded."""
    norms = (tiles * tiles).sum(1)
    step = max(1, _DISTANCE_BUDGET // max(1, tiles.shape[0]))
    out = [
        (norms - 2 * chunk @ tiles.T).argmin(1)  # ||x||^2 is the same for every tile of a row
        for chunk in rows.split(step)
    ]
    return torch.cat(out) if out else rows.new_zeros(0, dtype=torch.long)


def kmeans(tiles: Tensor, counts: Tensor, k: int, seed: int = 0, iterations: int = KMEANS_ITERATIONS) -> Tensor:
    """Weighted Lloyd's k-means of the distinct tiles; starts from k tiles drawn by frequency."""
    if k >= len(tiles):
        return tiles.clone()
    generator = torch.Generator().manual_seed(seed)
    centres = tiles[torch.multinomial(counts, k, replacement=False, generator=generator)].clone()
    for _ in range(iterations):
        owner = nearest(tiles, centres)
        weight = torch.zeros(k).index_add_(0, owner, counts)
        sums = torch.zeros_like(centres).index_add_(0, owner, tiles * counts[:, None])
        used = weight > 0
        centres[used] = sums[used] / weight[used, None]  # an empty cluster keeps its tile
    return centres


def fit_baselines(frames: Iterable[Tensor], codebook_size: int, tile: int, seed: int = 0) -> list[TileDictionary]:
    """The dictionaries from training frames (batches of (B,3,H,W) in [0,1]): k-means at the codebook
    size and at 512, and the exact dictionary; a k-means as large as the tiles is left out (it is the exact one)."""
    counter = TileCounter(tile)
    for batch in frames:
        counter.add(to_uint8(batch))
    if not len(counter):
        return []
    tiles, counts = counter.tiles().float() / 255, counter.counts()
    found = []
    for k in dict.fromkeys((codebook_size, SMALL_KMEANS)):
        if k < len(tiles):
            found.append(TileDictionary(f"k-means {k}", kmeans(tiles, counts, k, seed), tile))
    found.append(TileDictionary("exact dictionary", tiles, tile))
    return found
