"""Frames of an episode: the world through the window that follows the player, with the dialog box."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from pokevq.gameboy import TILE, Box
from pokevq.synth.dialog import DIALOG_BOX, DIALOG_TOP_ROW, dialog_schedule
from pokevq.synth.palettes import RGB
from pokevq.synth.player import Walker
from pokevq.synth.tiles import ATLAS, VIEW_COLS, VIEW_ROWS
from pokevq.synth.world import generate_world


def _blit(tile_ids: np.ndarray, phase: int) -> np.ndarray:
    """Shade-index pixels of a tile map: (rows, cols) ids -> (rows*8, cols*8)."""
    rows, cols = tile_ids.shape
    pixels = ATLAS.tiles[phase][tile_ids]  # (rows, cols, 8, 8)
    return pixels.transpose(0, 2, 1, 3).reshape(rows * TILE, cols * TILE)


def render_episode_indices(
    rng: np.random.Generator, n_frames: int
) -> Iterator[tuple[np.ndarray, Box | None]]:
    """Yield (shade-index frame (144, 160) uint8, dialog box or None) for one episode.

    Shade indices are 0 (lightest) to 3 (darkest); map them through a palette for RGB.
    """
    world = generate_world(rng)
    walker = Walker(world, rng)
    dialogs = dialog_schedule(rng, n_frames)
    for i in range(n_frames):
        box = dialogs[i]
        if box is None:
            walker.step()
        else:
            walker.stand()
        phase = (i // 4) % 2
        view = world[walker.cam_y : walker.cam_y + VIEW_ROWS, walker.cam_x : walker.cam_x + VIEW_COLS]
        frame = _blit(view, phase)
        shades, opaque = walker.sprite()
        sy, sx = (walker.y - walker.cam_y) * TILE, (walker.x - walker.cam_x) * TILE
        np.copyto(frame[sy : sy + 16, sx : sx + 16], shades, where=opaque)
        if box is not None:
            frame[DIALOG_TOP_ROW * TILE :] = _blit(box, phase)
        yield frame, (DIALOG_BOX if box is not None else None)


def render_episode(
    rng: np.random.Generator, palette: Sequence[RGB], n_frames: int
) -> Iterator[tuple[np.ndarray, Box | None]]:
    """Yield (RGB frame (144, 160, 3) uint8, dialog box or None) for one episode."""
    colours = np.asarray(palette, dtype=np.uint8)
    if colours.shape != (4, 3):
        raise ValueError(f"palette must be 4 RGB colours, got shape {colours.shape}")
    for shades, box in render_episode_indices(rng, n_frames):
        yield colours[shades], box
