"""Epoch-level metrics: reconstruction quality and codebook health.

Everything is accumulated over a whole epoch rather than averaged per batch, so a
small last batch weighs as much as its frames and perplexity reflects the codes
used across the epoch (per-batch perplexity is always capped by the batch size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pokevq.gameboy import MAX_COLOURS, Box
from pokevq.model.quantizers import count_codes


def psnr(mse: float, max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; inf for a perfect reconstruction."""
    if mse < 0:
        raise ValueError(f"mse must be >= 0, got {mse}")
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(max_val**2 / mse)


def perplexity_from_counts(counts: Tensor) -> float:
    """exp(entropy) of the code usage distribution: the effective number of codes used.

    All zeros -> 0.0, one code used -> 1.0, uniform over K codes -> K.
    """
    counts = counts.detach().double().reshape(-1)
    total = counts.sum()
    if total <= 0:
        return 0.0
    probs = counts[counts > 0] / total
    entropy = -(probs * probs.log()).sum()
    return float(entropy.exp())


def codebook_usage(counts: Tensor) -> float:
    """Share of codes used at least once, 0..1."""
    if counts.numel() == 0:
        return 0.0
    return float((counts > 0).sum()) / counts.numel()


class EpochMetrics:
    """Accumulates loss, pixel error and code counts over an epoch.

    Accumulators stay on the batches' device, so update() never waits on the GPU;
    only compute() reads them back.
    """

    def __init__(self, codebook_size: int) -> None:
        self.codebook_size = codebook_size
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.pixels = 0
        self._sse: Tensor | float = 0.0  # sum of squared error, float64
        self._loss_sum: Tensor | float = 0.0  # sum of loss * batch_size, float64
        self._counts: Tensor | None = None  # (codebook_size,) long

    @torch.no_grad()
    def update(
        self,
        recon: Tensor,
        target: Tensor,
        codes: Tensor,
        loss: float | Tensor,
        batch_size: int,
    ) -> None:
        """Add one batch. `loss` is the batch mean; it is weighted by batch_size."""
        if recon.shape != target.shape:
            raise ValueError(f"recon {tuple(recon.shape)} and target {tuple(target.shape)} differ")
        diff = recon.detach().float() - target.detach().float()
        self._sse = self._sse + diff.square().sum(dtype=torch.float64)
        self.pixels += target.numel()
        if isinstance(loss, Tensor):
            loss = loss.detach().double()
        self._loss_sum = self._loss_sum + loss * batch_size
        counts = count_codes(codes.detach(), self.codebook_size)
        self._counts = counts if self._counts is None else self._counts + counts.to(self._counts.device)
        self.frames += batch_size

    def state(self) -> dict[str, Any]:
        """What this process accumulated, as plain values: every rank's states merge into the epoch's figures."""
        counts = self._counts.cpu() if self._counts is not None else None
        return {"frames": self.frames, "pixels": self.pixels, "sse": float(self._sse),
                "loss_sum": float(self._loss_sum), "counts": counts}

    def merge(self, state: dict[str, Any]) -> None:
        """Add another rank's `state()` to this one."""
        self.frames += int(state["frames"])
        self.pixels += int(state["pixels"])
        self._sse = float(self._sse) + float(state["sse"])
        self._loss_sum = float(self._loss_sum) + float(state["loss_sum"])
        if state["counts"] is not None:
            counts = state["counts"]
            self._counts = counts.clone() if self._counts is None else self._counts.cpu() + counts

    def compute(self) -> dict[str, float | int]:
        """Plain Python numbers: loss, mse, psnr, perplexity, codebook_usage, dead_codes, frames.

        With no batch seen every value is 0 (not nan), including dead_codes.
        """
        if self.frames == 0 or self.pixels == 0 or self._counts is None:
            return {
                "loss": 0.0,
                "mse": 0.0,
                "psnr": 0.0,
                "perplexity": 0.0,
                "codebook_usage": 0.0,
                "dead_codes": 0,
                "frames": 0,
            }
        mse = float(self._sse) / self.pixels
        counts = self._counts.cpu()
        return {
            "loss": float(self._loss_sum) / self.frames,
            "mse": mse,
            "psnr": psnr(mse),
            "perplexity": perplexity_from_counts(counts),
            "codebook_usage": codebook_usage(counts),
            "dead_codes": int((counts == 0).sum()),
            "frames": int(self.frames),
        }


# ---------------------------------------------------------------------------
# Tokenizer quality on the validation episodes (issue: a near-lossless Game Boy tokenizer)

MAX_PALETTE = MAX_COLOURS  # colours a frame's palette may hold (a Game Boy Color frame shows up to 56)
_SNAP_BUDGET = 1 << 24  # pixel-colour distances per chunk: bounds memory at any palette size


def _gaussian_window(size: int, sigma: float, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    weights = torch.exp(-(coords**2) / (2 * sigma**2))
    return weights / weights.sum()


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (B,), for images in [0, 1] (Wang et al. 2004).

    Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, computed per channel over the
    positions where the window fits (no padding), then averaged: identical images give 1.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B,C,H,W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.float(), y.float()
    c = x.shape[1]
    window = min(window, x.shape[2], x.shape[3])
    g = _gaussian_window(window, sigma, x.device)
    rows, cols = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, rows, groups=c), cols, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.mean(dim=(1, 2, 3))


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats -> uint8 pixel values, rounded as a PNG writer would."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


def frame_palette(frame: Tensor, colours: int = MAX_PALETTE) -> Tensor:
    """The palette of one (3,H,W) uint8 frame read off the frame: its distinct colours, most frequent first,
    at most `colours` of them (P,3).

    A Game Boy frame has at most 4 shades and a Game Boy Color frame at most 56 colours, so for
    either this is exactly the colours the frame shows; only a resized frame (blended colours) is cut.
    """
    ids = (frame[0].int() << 16) | (frame[1].int() << 8) | frame[2].int()
    found, counts = torch.unique(ids.reshape(-1), return_counts=True)
    top = found[counts.argsort(descending=True, stable=True)[:colours]]
    return torch.stack([(top >> 16) & 255, (top >> 8) & 255, top & 255], dim=1).to(torch.uint8)


def stack_palettes(palettes: Sequence[Tensor]) -> Tensor:
    """(B,P,3) uint8 from palettes of different lengths, each padded with its first colour to the longest.

    Padding to the batch's longest palette, not to MAX_PALETTE, keeps snapping 4-shade frames as cheap
    as 4 colours make it.
    """
    longest = max(len(p) for p in palettes)
    return torch.stack([torch.cat([p, p[:1].expand(longest - len(p), 3)]) for p in palettes])


def snap_to_palette(images: Tensor, palettes: Tensor) -> Tensor:
    """Each pixel of (B,3,H,W) [0,1] images replaced by the nearest colour of its frame's palette (B,P,3) uint8.

    Returns uint8 (B,3,H,W): what the frame looks like once shown with the game's shades. The
    distances are one batched matrix product (|c|^2 - 2 x.c, centred on mid-grey so float32 keeps
    them exact to far below a shade step), in chunks of frames that bound memory at 56 colours.
    """
    b, c, h, w = images.shape
    pixels = (images.float().clamp(0, 1) * 255 - 128).reshape(b, c, h * w).transpose(1, 2)  # (B,HW,3)
    colours = palettes.to(images.device).float() - 128  # (B,P,3)
    step = max(1, _SNAP_BUDGET // max(1, colours.shape[1] * h * w))
    nearest = torch.cat([  # |c|^2 - 2 x.c per pixel and colour, (b,HW,P): the nearest colour is the smallest
        torch.baddbmm((cs * cs).sum(-1).unsqueeze(1), ps, cs.transpose(1, 2), alpha=-2).argmin(dim=-1)
        for ps, cs in zip(pixels.split(step), colours.split(step))
    ])  # (B,HW)
    snapped = torch.gather(palettes.to(images.device), 1, nearest.unsqueeze(-1).expand(-1, -1, 3))  # (B,HW,3)
    return snapped.transpose(1, 2).reshape(b, c, h, w)


def tile_changed(frames: Tensor, previous: Tensor, tile: int) -> Tensor:
    """(B,h,w) bool: whether each tile x tile block differs between two (B,3,H,W) uint8 batches."""
    diff = (frames.int() - previous.int()).abs().amax(dim=1, keepdim=True).float()
    return F.max_pool2d(diff, tile).squeeze(1) > 0


def _known(palette: Tensor, device: torch.device) -> Tensor:
    return palette.to(device=device, dtype=torch.uint8).reshape(-1, 3)[:MAX_PALETTE]


def tile_rows(frames: Tensor, tile: int) -> Tensor:
    """(B,C,H,W) -> (B*h*w, C*d*d): one row per d x d tile, in the order pixel_shuffle undoes."""
    blocks = F.pixel_unshuffle(frames, tile)
    return blocks.permute(0, 2, 3, 1).reshape(-1, blocks.shape[1])


class TileCounter:
    """Distinct tiles of the uint8 frames seen so far, with how often each occurs."""

    def __init__(self, tile: int) -> None:
        self.tile = tile
        self._counts: dict[bytes, int] = {}
        self._width = 0

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, frames: Tensor) -> None:
        rows = tile_rows(frames, self.tile)
        self._width = rows.shape[1]
        distinct, counts = torch.unique(rows, dim=0, return_counts=True)
        for row, count in zip(distinct.cpu().numpy(), counts.tolist()):
            key = row.tobytes()
            self._counts[key] = self._counts.get(key, 0) + count

    def state(self) -> dict[bytes, int]:
        return dict(self._counts)

    def merge(self, counts: dict[bytes, int]) -> None:
        for key, count in counts.items():
            self._counts[key] = self._counts.get(key, 0) + count
            self._width = self._width or len(key)

    def counts(self) -> Tensor:
        """How often each distinct tile occurs, in the order of `tiles()`."""
        return torch.tensor(list(self._counts.values()), dtype=torch.float32)

    def tiles(self) -> Tensor:
        """The distinct tiles (N, C*d*d) uint8."""
        if not self._counts:
            return torch.zeros(0, self._width, dtype=torch.uint8)
        data = bytearray(b"".join(self._counts))
        return torch.frombuffer(data, dtype=torch.uint8).view(len(self._counts), -1)


class QualityMetrics(EpochMetrics):
    """EpochMetrics plus what decides whether a tokenizer can be trusted, over a whole epoch.

    - ``ssim``: mean structural similarity of the frames;
    - ``pixel_accuracy``: share of pixels right once the reconstruction is snapped to the
      frame's palette (the game's shades when known, else the frame's own colours);
      ``exact_frames``: share of frames with every pixel right;
    - ``dialog_accuracy``: the same accuracy inside dialog boxes, for frames known to have one;
    - ``token_stability``: of the tiles (d x d blocks) that do not change between consecutive
      frames of an episode, the share whose code does not change either;
    - ``data_tiles`` and ``data_tile_perplexity``: how many distinct d x d blocks the frames
      hold and the perplexity of their frequencies. A tokenizer that gives every distinct
      tile its own code, and identical tiles the same code, uses exactly ``data_tiles``
      codes at a perplexity of ``data_tile_perplexity``: the yardstick for the codebook's
      ``codebook_usage`` and ``perplexity``.

    Frames must come in episode order (as the validation loader serves them) for stability.
    """

    def __init__(self, codebook_size: int, tile: int) -> None:
        self.tile = tile
        super().__init__(codebook_size)

    def reset(self) -> None:
        super().reset()
        self._ssim_sum = 0.0
        self._right = 0  # palette-snapped pixels equal to the original
        self._exact = 0
        self._dialog_right = 0
        self._dialog_pixels = 0
        self._unchanged_tiles = 0
        self._stable_tiles = 0
        self._previous: tuple[str, Tensor, Tensor] | None = None  # (sequence, frame uint8, codes)
        self._tiles = TileCounter(self.tile)

    @torch.no_grad()
    def update(  # type: ignore[override]
        self,
        recon: Tensor,
        target: Tensor,
        codes: Tensor,
        loss: float | Tensor,
        batch_size: int,
        *,
        palettes: Sequence[Tensor | None] | None = None,
        dialog_boxes: Sequence[Box | None] | None = None,
        sequences: Sequence[str] | None = None,
    ) -> None:
        """Add one batch; `palettes`, `dialog_boxes` and `sequences` (episode of each frame) are per frame."""
        super().update(recon, target, codes, loss, batch_size)
        recon, frames = recon.detach().float(), to_uint8(target.detach())
        self._ssim_sum += float(ssim(recon, frames.float() / 255).sum())
        known = palettes if palettes is not None else [None] * len(frames)
        palette = stack_palettes([frame_palette(f) if p is None else _known(p, f.device)
                                  for f, p in zip(frames, known)])
        right = (snap_to_palette(recon, palette) == frames).all(dim=1)  # (B,H,W)
        self._right += int(right.sum())
        self._exact += int(right.flatten(1).all(dim=1).sum())
        for i, box in enumerate(dialog_boxes or ()):
            if box is not None:
                top, left, bottom, right_edge = box
                region = right[i, top:bottom, left:right_edge]
                self._dialog_right += int(region.sum())
                self._dialog_pixels += region.numel()
        if sequences is not None:
            self._update_stability(frames, codes.detach(), list(sequences))
        self._tiles.add(frames)

    def _update_stability(self, frames: Tensor, codes: Tensor, sequences: list[str]) -> None:
        # Each frame's predecessor: the previous batch's last frame for the first, else the one before it.
        seq, frame, code = self._previous if self._previous is not None else (None, frames[0], codes[0])
        prev_frames = torch.cat([frame.unsqueeze(0).to(frames.device), frames[:-1]])
        prev_codes = torch.cat([code.unsqueeze(0).to(codes.device), codes[:-1]])
        prev_seqs = [seq, *sequences[:-1]]
        follows = torch.tensor([a == b for a, b in zip(sequences, prev_seqs)], device=frames.device)
        unchanged = ~tile_changed(frames, prev_frames, self.tile) & follows[:, None, None]
        self._unchanged_tiles += int(unchanged.sum())
        self._stable_tiles += int((unchanged & (codes == prev_codes)).sum())
        self._previous = (sequences[-1], frames[-1], codes[-1])

    def follow(self, earlier: QualityMetrics) -> None:
        """Continue `earlier`'s stream of frames: token stability compares the next frame with its last one."""
        self._previous = earlier._previous

    _SUMS = ("_ssim_sum", "_right", "_exact", "_dialog_right", "_dialog_pixels", "_unchanged_tiles", "_stable_tiles")

    def state(self) -> dict[str, Any]:
        state = super().state()
        state.update({name: getattr(self, name) for name in self._SUMS})
        state["tiles"] = self._tiles.state()
        return state

    def merge(self, state: dict[str, Any]) -> None:
        super().merge(state)
        for name in self._SUMS:
            setattr(self, name, getattr(self, name) + state[name])
        self._tiles.merge(state["tiles"])

    def compute(self) -> dict[str, float | int]:
        values = super().compute()
        if not self.frames:
            return values
        pixels = self.pixels // 3  # super counts channel values
        values.update(
            ssim=self._ssim_sum / self.frames,
            pixel_accuracy=self._right / pixels,
            exact_frames=self._exact / self.frames,
            data_tiles=len(self._tiles),
            data_tile_perplexity=perplexity_from_counts(self._tiles.counts()),
        )
        if self._dialog_pixels:
            values["dialog_accuracy"] = self._dialog_right / self._dialog_pixels
        if self._unchanged_tiles:
            values["token_stability"] = self._stable_tiles / self._unchanged_tiles
        return values
