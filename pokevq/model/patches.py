"""A codebook of pixel patches seeded from the data at every offset, for the ``patch`` architecture.

A Game Boy screen is drawn from 8x8 tiles, so the distinct 8x8 patches of the training frames are a
dictionary that codes every seen patch exactly (Dedieu et al. 2025 build their world model's tokens
this way). It fails where a frame shows a patch it never saw: the camera scrolls the map off the
8-pixel grid and sprites move over the background at any pixel. Those patches are the *training*
frames' patches at other offsets, or their sprites over other backgrounds. So the codebook is seeded
with the distinct on-grid patches first (most frequent first), then fills its remaining codes with
sprites put over backgrounds they were not seen on (`overlays.py`, up to half) and the most frequent
patches at the other 63 offsets (shift augmentation, read off the data instead of simulated), up to
the configured codebook size: one fixed number for every data set, never the count of distinct patches.

A patch is looked up exactly through a 64-bit hash of its pixels (a seen patch is its own nearest
code), and only the others go through a nearest-neighbour search: encoding stays cheap at 65,536 codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pokevq.model.overlays import first_positions, sprite_composites

_HASH_SEED = 0x5EED
_DISTANCE_BUDGET = 1 << 24  # distance-matrix entries per chunk of the nearest-neighbour search
_COMPACT_EVERY = 1 << 23  # window hashes held before duplicates are merged


def _hash_weights(d: int) -> Tensor:
    """One random odd 63-bit weight per pixel of a d x d window (a fixed draw: codes hash the same everywhere)."""
    generator = torch.Generator().manual_seed(_HASH_SEED)
    return torch.randint(1, 1 << 62, (d, d), generator=generator, dtype=torch.int64) * 2 + 1


def _packed(frames: Tensor) -> Tensor:
    """(B,3,H,W) uint8 -> (B,H,W) int64 of 0xRRGGBB."""
    f = frames.long()
    return (f[:, 0] << 16) | (f[:, 1] << 8) | f[:, 2]


def window_hashes(frames: Tensor, d: int) -> Tensor:
    """Hash of the d x d window at every pixel (B, H-d+1, W-d+1); int64 arithmetic wraps, as a hash should."""
    packed, weights = _packed(frames), _hash_weights(d).to(frames.device)
    h, w = packed.shape[1] - d + 1, packed.shape[2] - d + 1
    out = torch.zeros(packed.shape[0], h, w, dtype=torch.int64, device=frames.device)
    for dy in range(d):
        for dx in range(d):
            out += packed[:, dy:dy + h, dx:dx + w] * weights[dy, dx]
    return out


def patch_rows(frames: Tensor, d: int) -> Tensor:
    """(B,C,H,W) -> (B*h*w, C*d*d): one row per on-grid d x d patch, in the order pixel_shuffle undoes."""
    blocks = F.pixel_unshuffle(frames, d)
    return blocks.permute(0, 2, 3, 1).reshape(-1, blocks.shape[1])


def row_hashes(rows: Tensor, d: int, channels: int = 3) -> Tensor:
    """The hash `window_hashes` gives a window, for patch rows (N, C*d*d) uint8 as `patch_rows` lays them out."""
    pixels = rows.long().view(-1, channels, d * d)
    packed = (pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]
    return (packed * _hash_weights(d).to(rows.device).view(1, -1)).sum(1)


def _merge(hashes: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    unique, inverse = torch.unique(hashes, return_inverse=True)
    return unique, counts.new_zeros(unique.shape).index_add_(0, inverse, counts)


def frame_phases(hashes: Tensor, d: int) -> Tensor:
    """(B,) each frame's tile phase dy*d+dx: the offset whose windows repeat most (fewest distinct ones).

    A screen drawn from tiles and scrolled by (dy, dx) shows its tiles at that offset; ties go to 0.
    """
    distinct = []
    for phase in range(d * d):
        dy, dx = divmod(phase, d)
        block = hashes[:, dy::d, dx::d].reshape(hashes.shape[0], -1).sort(1).values
        distinct.append((block[:, 1:] != block[:, :-1]).sum(1))
    return torch.stack(distinct, 1).argmin(1)


def _window_weights(phases: Tensor, prior: Tensor, h: int, w: int, d: int) -> Tensor:
    """(B,h,w): how likely a held-out frame shows each window on its grid, by the tile phase it lies at."""
    qy, qx = phases // d, phases % d
    ys = (torch.arange(h)[None, :] - qy[:, None]) % d  # the window's offset from its frame's tiles
    xs = (torch.arange(w)[None, :] - qx[:, None]) % d
    return prior[ys[:, :, None] * d + xs[:, None, :]]


@torch.no_grad()
def seed_patches(frames: Iterable[Tensor], codebook_size: int, d: int) -> Tensor:
    """The codebook's patches (K', C*d*d) uint8, K' <= codebook_size, from batches of (B,3,H,W) uint8 frames.

    Distinct on-grid patches come first, most frequent first; then what a held-out frame is most
    likely to show that they miss. Fewer than `codebook_size` when the frames hold fewer candidates.
    """
    kept: list[Tensor] = []
    grid_h, grid_c, phases = [], [], []
    for batch in frames:
        batch = batch.cpu()
        kept.append(batch)
        hashes = window_hashes(batch, d)
        on_grid = hashes[:, ::d, ::d].reshape(-1)
        grid_h.append(on_grid)
        grid_c.append(torch.ones_like(on_grid))
        phases.append(frame_phases(hashes, d))
    if not kept:
        return torch.zeros(0, 3 * d * d, dtype=torch.uint8)
    # How often frames are scrolled off their tiles by each phase: a window at offset p from its
    # frame's tiles is on the grid of a frame scrolled by p.
    prior = torch.bincount(torch.cat(phases), minlength=d * d).double() + 1  # a phase never seen may still come
    prior /= prior.sum()
    any_h, any_c, held = [], [], 0
    for batch, phase in zip(kept, phases):
        hashes = window_hashes(batch, d)
        any_h.append(hashes.reshape(-1))
        any_c.append(_window_weights(phase, prior, hashes.shape[1], hashes.shape[2], d).reshape(-1))
        held += any_h[-1].numel()
        if held > _COMPACT_EVERY:
            merged = _merge(torch.cat(any_h), torch.cat(any_c))
            any_h, any_c, held = [merged[0]], [merged[1]], merged[0].numel()
    grid_hashes, grid_counts = _merge(torch.cat(grid_h), torch.cat(grid_c))
    all_hashes, all_counts = _merge(torch.cat(any_h), torch.cat(any_c))
    # On-grid patches first (by their on-grid frequency), then the rest by how often a held-out frame's grid
    # would show them.
    first = grid_hashes[torch.argsort(grid_counts, descending=True, stable=True)][:codebook_size]
    off_grid = ~torch.isin(all_hashes, grid_hashes)
    rest, rest_counts = all_hashes[off_grid], all_counts[off_grid]
    room = max(0, codebook_size - first.numel())
    chosen = torch.cat([first, rest[torch.argsort(rest_counts, descending=True, stable=True)][:room]])
    rows = _windows_of(kept, chosen, d)
    on_grid, windows = rows[:first.numel()], rows[first.numel():]
    # The free codes go to what a held-out frame is most likely to show on its grid: windows at other
    # offsets (weighted by how often frames are scrolled to where they would be on the grid) and sprites
    # put over backgrounds they were not seen on (by their expected occurrences).
    order = torch.argsort(grid_counts, descending=True, stable=True)[:codebook_size]
    composites, expected = sprite_composites(on_grid, grid_counts[order], limit=room)
    fresh = ~torch.isin(row_hashes(composites, d), chosen)
    window_counts = torch.sort(rest_counts, descending=True, stable=True).values[:windows.shape[0]]
    candidates = torch.cat([windows, composites[fresh]])
    likely = torch.cat([window_counts.double(), expected[fresh]])
    best = torch.argsort(likely, descending=True, stable=True)[:room]
    return torch.cat([on_grid, candidates[best]])


def _windows_of(frames: list[Tensor], chosen: Tensor, d: int) -> Tensor:
    """The pixels of each chosen hash, in `chosen`'s order, read from the first window that has it."""
    order = torch.argsort(chosen)
    sorted_chosen = chosen[order]
    out = torch.zeros(chosen.numel(), 3 * d * d, dtype=torch.uint8)
    found = torch.zeros(chosen.numel(), dtype=torch.bool)
    for batch in frames:
        hashes = window_hashes(batch, d)
        b, h, w = hashes.shape
        flat = hashes.reshape(-1)
        slot = torch.searchsorted(sorted_chosen, flat).clamp_max(chosen.numel() - 1)
        hit = (sorted_chosen[slot] == flat) & ~found[order[slot]]
        if not hit.any():
            continue
        where = hit.nonzero().squeeze(1)
        targets = order[slot[where]]
        targets, first = _first_per_target(targets)
        where = where[first]
        n, rem = where // (h * w), where % (h * w)
        y, x = rem // w, rem % w
        windows = torch.stack([batch[i, :, yy:yy + d, xx:xx + d] for i, yy, xx in zip(n.tolist(), y.tolist(),
                                                                                    x.tolist())])
        out[targets] = patch_rows(windows, d)
        found[targets] = True
        if bool(found.all()):
            break
    return out[found]


def _first_per_target(targets: Tensor) -> tuple[Tensor, Tensor]:
    """Each distinct target once, with the position of its first occurrence."""
    unique, inverse = torch.unique(targets, return_inverse=True)
    return unique, first_positions(inverse, unique.numel())


class PatchCodebook(nn.Module):
    """K codes that are pixel patches (uint8 buffer); a patch's code is its exact match, else its nearest."""

    def __init__(self, codebook_size: int, patch: int, channels: int = 3) -> None:
        super().__init__()
        self.codebook_size, self.patch, self.channels = codebook_size, patch, channels
        self.register_buffer("patches", torch.zeros(codebook_size, channels * patch * patch, dtype=torch.uint8))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # codes seeded so far (0: not yet)
        self._index: _Index | None = None

    @property
    def seeded(self) -> bool:
        return int(self.filled) > 0

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._index = None

    @torch.no_grad()
    def seed(self, patches: Tensor) -> None:
        """Take `patches` (K', C*d*d) uint8 as the first K' codes; the rest repeat the first (never chosen)."""
        n = min(int(patches.shape[0]), self.codebook_size)
        if n == 0:
            raise ValueError("no frames to seed the patch codebook from")
        self.patches.copy_(patches[:1].expand_as(self.patches).to(self.patches.device))
        self.patches[:n] = patches[:n].to(self.patches.device)
        self.filled.fill_(n)
        self._index = None

    def build_index(self) -> None:
        """Build the lookup's index now (it is built on first use otherwise): a traced export must not trace it."""
        self._lookup_index()

    def _lookup_index(self) -> _Index:
        if self._index is None or self._index.hashes.device != self.patches.device:
            self._index = _Index.build(self.patches[: int(self.filled)], self.patch, self.channels)
        return self._index

    @torch.no_grad()
    def lookup(self, rows: Tensor) -> Tensor:
        """Codes (N,) for patch rows (N, C*d*d) uint8: the exact match through the hash, else the nearest patch."""
        index = self._lookup_index()
        hashes, inverse = torch.unique(row_hashes(rows, self.patch, self.channels), return_inverse=True)
        slot = torch.searchsorted(index.hashes, hashes).clamp_max(index.hashes.numel() - 1)
        exact = index.hashes[slot] == hashes
        codes = index.order[slot]
        missing = (~exact).nonzero().squeeze(1)
        if missing.numel():
            codes[missing] = index.remembered(hashes[missing],
                                              lambda which: self._rows_of(rows, inverse, missing[which]))
        return codes[inverse]

    def search(self, rows: Tensor) -> Tensor:
        """Codes (N,) for patch rows by the nearest-patch search alone (the same codes as `lookup`)."""
        return self._lookup_index().nearest(rows)

    @staticmethod
    def _rows_of(rows: Tensor, inverse: Tensor, which: Tensor) -> Tensor:
        """The first row of each distinct hash in `which` (indices into the distinct hashes)."""
        return rows[first_positions(inverse, int(inverse.max()) + 1)[which]]

    def pixels(self, codes: Tensor) -> Tensor:
        """(N,) codes -> (N, C*d*d) float pixels in [0, 1]."""
        return self.patches[codes.reshape(-1).long()].float() / 255.0


class _Index:
    """What the lookup needs, built once per codebook: sorted hashes, and the codes for the nearest-neighbour
    search: a few principal directions to shortlist candidates, the full pixels to pick among them."""

    SHORTLIST_DIMS = 24
    SHORTLIST = 32
    REMEMBERED = 1 << 20  # unseen patches whose nearest code is kept: frames of a video repeat them

    def __init__(self, hashes: Tensor, order: Tensor, codes: Tensor, basis: Tensor, mean: Tensor) -> None:
        self.hashes, self.order, self.codes, self.basis, self.mean = hashes, order, codes, basis, mean
        self.projected = (codes - mean) @ basis
        self.projected_norms = (self.projected * self.projected).sum(1)
        self.memory: dict[int, int] = {}

    def remembered(self, hashes: Tensor, rows_of: Callable[[Tensor], Tensor]) -> Tensor:
        """Nearest codes of the patches with these hashes: searched once, then remembered (the codebook is fixed)."""
        keys = hashes.tolist()
        new = [i for i, key in enumerate(keys) if key not in self.memory]
        if new:
            if len(self.memory) + len(new) > self.REMEMBERED:
                self.memory.clear()
            which = torch.tensor(new, dtype=torch.long, device=hashes.device)
            for i, code in zip(new, self.nearest(rows_of(which)).tolist()):
                self.memory[keys[i]] = code
        return torch.tensor([self.memory[key] for key in keys], dtype=torch.long, device=hashes.device)

    @classmethod
    def build(cls, patches: Tensor, patch: int, channels: int) -> _Index:
        hashes = row_hashes(patches, patch, channels)
        order = torch.argsort(hashes)
        codes = patches.float()
        mean = codes.mean(0, keepdim=True)
        dims = min(cls.SHORTLIST_DIMS, codes.shape[0], codes.shape[1])
        sample = codes[torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(0))[:8192]
                       .to(codes.device)] - mean
        basis = torch.linalg.svd(sample, full_matrices=False).Vh[:dims].T.contiguous()
        return cls(hashes[order], order, codes, basis, mean)

    def nearest(self, rows: Tensor) -> Tensor:
        """Nearest code of each row (L2 in pixels), among the shortlist of the nearest in the principal directions."""
        k = min(self.SHORTLIST, self.codes.shape[0])
        step = max(1, _DISTANCE_BUDGET // max(1, self.codes.shape[0]))
        return _shortlisted_nearest(rows.float(), self.codes, self.mean, self.basis, self.projected,
                                    self.projected_norms, k, step)


@torch.jit.script
def _shortlisted_nearest(rows: Tensor, codes: Tensor, mean: Tensor, basis: Tensor, projected: Tensor,
                         projected_norms: Tensor, k: int, step: int) -> Tensor:
    """Scripted, so a traced export keeps the loop over chunks for any batch size."""
    found: list[Tensor] = []
    for chunk in rows.split(step):
        coarse = projected_norms - 2 * ((chunk - mean) @ basis) @ projected.T
        candidates = coarse.topk(k, dim=1, largest=False).indices  # (n, k)
        exact = ((codes[candidates] - chunk[:, None]) ** 2).sum(2)
        found.append(candidates.gather(1, exact.argmin(1, keepdim=True)).squeeze(1))
    if len(found) == 0:
        return torch.zeros(0, dtype=torch.long, device=rows.device)
    return torch.cat(found)
