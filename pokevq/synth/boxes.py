"""Text boxes, menus and bars drawn in colour indices, tile by tile as the games draw them."""

from __future__ import annotations

import numpy as np

from pokevq.gameboy import TILE
from pokevq.synth.font import GLYPHS
from pokevq.synth.tiles import ATLAS, TILE_ID, art

CURSOR = art(("........", ".3......", ".33.....", ".333....", ".33.....", ".3......", "........", "........"))


def box(rows: int, cols: int) -> np.ndarray:
    """An empty bordered box of rows x cols tiles, in pixels."""
    ids = np.full((rows, cols), TILE_ID["box_fill"], dtype=np.int16)
    ids[0, :], ids[-1, :] = TILE_ID["box_t"], TILE_ID["box_b"]
    ids[:, 0], ids[:, -1] = TILE_ID["box_l"], TILE_ID["box_r"]
    ids[0, 0], ids[0, -1], ids[-1, 0], ids[-1, -1] = (TILE_ID[f"box_{c}"] for c in ("tl", "tr", "bl", "br"))
    return ATLAS.tiles[0][ids].transpose(0, 2, 1, 3).reshape(rows * TILE, cols * TILE).copy()


def write(pixels: np.ndarray, row: int, col: int, text: str) -> None:
    """Type `text` into `pixels` from tile (row, col) on; characters past the edge are dropped."""
    y = row * TILE
    for i, char in enumerate(text):
        x = (col + i) * TILE
        if x + TILE > pixels.shape[1] or y + TILE > pixels.shape[0]:
            break
        pixels[y : y + TILE, x : x + TILE] = GLYPHS.get(char, GLYPHS[" "])


def put(pixels: np.ndarray, row: int, col: int, tile: np.ndarray) -> None:
    pixels[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE] = tile


def hp_bar(pixels: np.ndarray, row: int, col: int, tiles: int, fill: float) -> None:
    """An HP bar of `tiles` tiles, filled to `fill` (0..1) to the pixel, as the games draw it."""
    y, x = row * TILE, col * TILE
    width = tiles * TILE
    pixels[y : y + TILE, x : x + width] = 0
    pixels[y + 2, x : x + width] = 3
    pixels[y + 6, x : x + width] = 3
    pixels[y + 2 : y + 7, x] = 3
    pixels[y + 2 : y + 7, x + width - 1] = 3
    filled = int(round(fill * (width - 2)))
    pixels[y + 3 : y + 6, x + 1 : x + 1 + filled] = 2 if fill < 0.5 else 3


def typed(lines: list[str], shown: int) -> list[str]:
    """The first `shown` characters of `lines`, line by line, as text appears while it is typed."""
    out = []
    for line in lines:
        out.append(line[: max(shown, 0)])
        shown -= len(line)
    return out


def _big_glyph(char: str) -> np.ndarray:
    return np.kron(GLYPHS.get(char, GLYPHS[" "]), np.ones((2, 2), dtype=np.uint8))


def big_text(text: str) -> np.ndarray:
    """A title in the font at twice the size (16x16 per letter), for logos."""
    return np.concatenate([_big_glyph(c) for c in text], axis=1)


def blank(tiles_high: int, tiles_wide: int) -> np.ndarray:
    return np.zeros((tiles_high * TILE, tiles_wide * TILE), dtype=np.uint8)
