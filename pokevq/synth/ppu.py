"""The Game Boy's picture processor, as far as a frame shows it: background, window, sprites, palettes.

Real frames are not a grid of whole tiles. The hardware draws them in layers, and this module
composes one frame the same way:

- the **background**: a 32x32 tile map (256x256 pixels) seen through the scroll offset (SCX, SCY),
  wrapping around its edges, optionally with a different SCX per line (the raster effect games
  use to slide part of the screen);
- the **window**: a second layer of tiles over the background from (WY, WX) to the bottom right,
  where text boxes and menus live;
- **sprites**: up to 40 objects of 8x8 or 8x16 pixels at any pixel position, flipped on either
  axis, colour 0 transparent, at most 10 per line (the rest of that line is not drawn, as on the
  hardware), the first in the list on top;
- **palettes**: BGP maps the background's and window's colours 0-3 to shades, OBP0/OBP1 the
  sprites'; remapping them over a few frames is how games fade and flash.

Everything is in colour indices 0-3 until the palettes turn them into shades (0 lightest .. 3
darkest); the dataset writer colours the shades with the game's RGB palette last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pokevq.gameboy import SCREEN_H, SCREEN_W, TILE

MAP_TILES = 32  # the background map is 32x32 tiles
MAP_SIZE = MAP_TILES * TILE  # 256 pixels
MAX_SPRITES_PER_LINE = 10
IDENTITY = (0, 1, 2, 3)  # a palette register that leaves colours as they are


@dataclass(frozen=True)
class Sprite:
    """One object: its pixels (8x8 or 16x8 colour indices, 0 transparent) at a screen position."""

    y: int  # top row on screen, may be negative or past the bottom (partly visible)
    x: int  # left column on screen
    pixels: np.ndarray
    flip_x: bool = False
    flip_y: bool = False
    palette: tuple[int, int, int, int] = IDENTITY  # OBP: colour -> shade (colour 0 is never drawn)
    behind: bool = False  # drawn only over background colour 0, as with the priority bit

    def __post_init__(self) -> None:
        if self.pixels.shape not in ((TILE, TILE), (2 * TILE, TILE)):
            raise ValueError(f"a sprite is 8x8 or 8x16 pixels, got {self.pixels.shape}")


@dataclass
class Screen:
    """The registers and memory one frame is drawn from."""

    background: np.ndarray  # (256, 256) colour indices: the drawn 32x32 tile map
    scx: int = 0
    scy: int = 0
    line_scx: np.ndarray | None = None  # (144,) SCX per line, overriding scx (raster effects)
    window: np.ndarray | None = None  # colour indices drawn at (wy, wx), clipped at the screen's edge
    wy: int = 0
    wx: int = 0
    sprites: Sequence[Sprite] = field(default_factory=tuple)
    bgp: tuple[int, int, int, int] = IDENTITY


def draw_tiles(tile_map: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    """Colour-index pixels of a tile map: (rows, cols) ids into tiles (n, 8, 8) -> (rows*8, cols*8)."""
    rows, cols = tile_map.shape
    return tiles[tile_map].transpose(0, 2, 1, 3).reshape(rows * TILE, cols * TILE)


def _sprite_lines(sprites: Sequence[Sprite]) -> list[np.ndarray]:
    """Per sprite, the screen lines it may draw on: the first 10 sprites of each line win it."""
    used = np.zeros(SCREEN_H, dtype=np.int16)
    allowed = []
    for sprite in sprites:
        lines = np.arange(sprite.y, sprite.y + sprite.pixels.shape[0])
        on_screen = lines[(lines >= 0) & (lines < SCREEN_H)]
        free = on_screen[used[on_screen] < MAX_SPRITES_PER_LINE]
        used[free] += 1
        mask = np.zeros(sprite.pixels.shape[0], dtype=bool)
        mask[free - sprite.y] = True
        allowed.append(mask)
    return allowed


def render(screen: Screen) -> np.ndarray:
    """The frame's shades (144, 160) uint8, 0 lightest .. 3 darkest."""
    rows = (np.arange(SCREEN_H) + screen.scy) % MAP_SIZE
    if screen.line_scx is None:
        cols = (np.arange(SCREEN_W) + screen.scx) % MAP_SIZE
        colour = screen.background[np.ix_(rows, cols)]
    else:
        cols = (np.arange(SCREEN_W)[None, :] + np.asarray(screen.line_scx)[:, None]) % MAP_SIZE
        colour = screen.background[rows[:, None], cols]
    if screen.window is not None and screen.wy < SCREEN_H and screen.wx < SCREEN_W:
        height, width = SCREEN_H - screen.wy, SCREEN_W - screen.wx
        part = screen.window[:height, :width]
        colour[screen.wy : screen.wy + part.shape[0], screen.wx : screen.wx + part.shape[1]] = part
    shades = np.asarray(screen.bgp, dtype=np.uint8)[colour]
    allowed = _sprite_lines(screen.sprites)
    # Drawn last to first, so the first sprite in the list ends on top.
    for sprite, lines in zip(reversed(screen.sprites), reversed(allowed)):
        pixels = sprite.pixels
        if sprite.flip_y:
            pixels = pixels[::-1]
        if sprite.flip_x:
            pixels = pixels[:, ::-1]
        height = pixels.shape[0]
        top, left = sprite.y, sprite.x
        y0, y1 = max(top, 0), min(top + height, SCREEN_H)
        x0, x1 = max(left, 0), min(left + TILE, SCREEN_W)
        if y0 >= y1 or x0 >= x1:
            continue
        part = pixels[y0 - top : y1 - top, x0 - left : x1 - left]
        mask = (part != 0) & lines[y0 - top : y1 - top, None]
        if sprite.behind:
            mask &= colour[y0:y1, x0:x1] == 0
        obp = np.asarray(sprite.palette, dtype=np.uint8)
        np.copyto(shades[y0:y1, x0:x1], obp[part], where=mask)
    return shades


def sprites_of(pixels: np.ndarray, y: int, x: int, **options: object) -> list[Sprite]:
    """A larger picture (multiple of 8 wide, 16 high per row of sprites) as 8x16 sprites, left to right."""
    height, width = pixels.shape
    if height % (2 * TILE) or width % TILE:
        raise ValueError(f"a sprite picture is a multiple of 16x8 pixels, got {pixels.shape}")
    flip_x = bool(options.get("flip_x", False))
    out = []
    for row in range(0, height, 2 * TILE):
        columns = range(0, width, TILE)
        for col in columns:
            # A flipped picture is drawn from its flipped halves in mirrored order.
            src = width - TILE - col if flip_x else col
            out.append(Sprite(y + row, x + col, pixels[row : row + 2 * TILE, src : src + TILE], **options))  # type: ignore[arg-type]
    return out


# Palette sequences games step through, one entry per sampled frame.
FADE_TO_WHITE = ((0, 1, 2, 3), (0, 0, 1, 2), (0, 0, 0, 1), (0, 0, 0, 0))
FADE_TO_BLACK = ((0, 1, 2, 3), (1, 2, 3, 3), (2, 3, 3, 3), (3, 3, 3, 3))
INVERTED = (3, 2, 1, 0)
