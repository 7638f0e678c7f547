"""Synthetic Game Boy overworld frames, so the pipeline can be tried with no real data.

The frames imitate a Pokémon Red-style overworld: an 8x8-tile world (grass, tall
grass, paths, water, trees, houses, fences, flowers) seen through a 160x144
window that follows a walking player, with the classic bottom dialog box in
some runs of frames. Every pixel is one of the game's 4 palette shades, so a
reconstruction can be judged by eye and snapped back to the palette by metrics.

Layout written by `generate_dataset(out_dir, ...)`::

    out_dir/game{g}/episode{e}/frame_{n:03d}.png   # 1-based; RGB, 160 wide x 144 high
    out_dir/synth_index.json                        # one entry per frame, see below

`synth_index.json` is a JSON list with one object per frame, in writing order,
holding the `FrameInfo` fields::

    {"key": "game1/episode1/frame_001.png", "game": 1, "episode": 1, "frame": 1,
     "has_dialog": false, "dialog_box": null,          # or [top, left, bottom, right]
     "palette": [[224, 248, 208], ..., [8, 24, 32]]}   # 4 RGB shades, lightest first

`dialog_box` is in pixels with bottom and right exclusive, so
`frame[top:bottom, left:right]` is the box. `load_index(out_dir)` reads the file
back as `FrameInfo`s.

Everything is deterministic: each episode draws from its own
`numpy.random.default_rng([seed, game, episode])`, so the same arguments give
byte-identical PNGs and no global random state is touched.

The module reads top to bottom: palettes and tiles, world generation, the
player's walk, dialog, frame rendering, then the dataset writer.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pokevq.errors import ConfigError
from pokevq.gameboy import ANNOTATIONS_NAME, SCREEN_H, SCREEN_W, TILE, Box

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
Palette = tuple[RGB, RGB, RGB, RGB]

VIEW_COLS, VIEW_ROWS = SCREEN_W // TILE, SCREEN_H // TILE  # 20 x 18 tiles
WORLD_COLS, WORLD_ROWS = 40, 36

# ---------------------------------------------------------------------------
# Palettes: 4 shades each, lightest first (shade index 0 = lightest, 3 = darkest).
# ---------------------------------------------------------------------------

PALETTES: tuple[Palette, ...] = (
    ((224, 248, 208), (136, 192, 112), (52, 104, 86), (8, 24, 32)),  # DMG green
    ((232, 232, 232), (160, 160, 160), (88, 88, 88), (16, 16, 16)),  # Pocket grey
    ((248, 232, 208), (216, 144, 112), (144, 64, 56), (40, 16, 16)),  # sepia / red
    ((224, 240, 255), (136, 168, 232), (48, 80, 160), (8, 16, 48)),  # blue
)


def palette_for_game(game: int) -> Palette:
    """Game g (1-based) cycles through PALETTES so neighbouring games look different."""
    return PALETTES[(game - 1) % len(PALETTES)]


# ---------------------------------------------------------------------------
# Tiles: every tile is an 8x8 array of shade indices, drawn once at import.
# ---------------------------------------------------------------------------


def _art(rows: Sequence[str], bg: str = "0") -> np.ndarray:
    """Shade-index array from ASCII art; '.' is the background shade `bg`."""
    text = [row.replace(".", bg) for row in rows]
    if len({len(row) for row in text}) != 1:
        raise ValueError(f"ragged tile art: {rows}")
    return np.array([[int(ch) for ch in row] for row in text], dtype=np.uint8)


def _split2x2(block: np.ndarray) -> list[np.ndarray]:
    """A 16x16 block as its four 8x8 tiles: top-left, top-right, bottom-left, bottom-right."""
    return [block[:8, :8], block[:8, 8:], block[8:, :8], block[8:, 8:]]


GRASS_BG = "1"  # grass sits on the second-lightest shade; paths are the lightest

_GRASS = _art(
    (
        "........",
        ".2.2....",
        "..2.....",
        "........",
        "........",
        ".....2.2",
        "......2.",
        "........",
    ),
    GRASS_BG,
)
_TALL_GRASS = _art(
    (
        "3.....3.",
        "23...323",
        "223.3222",
        "2223222.",
        ".3.....3",
        "323...32",
        "2223.322",
        "222.3222",
    ),
    GRASS_BG,
)
_PATH = _art(
    (
        "........",
        "........",
        "...1....",
        "........",
        "........",
        "......1.",
        ".1......",
        "........",
    )
)
_WATER = (
    _art(
        (
            "22222222",
            "22222222",
            "21122222",
            "22211222",
            "22222222",
            "22222211",
            "22222122",
            "22222222",
        )
    ),
    _art(
        (
            "22222222",
            "22222222",
            "22112222",
            "22221122",
            "22222222",
            "12222221",
            "22222212",
            "22222222",
        )
    ),
)
_FLOWER = (
    _art(
        (
            "........",
            "..0.....",
            ".030....",
            "..0.....",
            ".....0..",
            "....030.",
            ".....0..",
            "........",
        ),
        GRASS_BG,
    ),
    _art(
        (
            "........",
            ".0.0....",
            "..3.....",
            ".0.0....",
            "....0.0.",
            ".....3..",
            "....0.0.",
            "........",
        ),
        GRASS_BG,
    ),
)
_FENCE = _art(
    (
        ".33.....",
        "3003....",
        "30033333",
        "30000000",
        "30033333",
        "3003....",
        "3003....",
        ".33.....",
    ),
    GRASS_BG,
)
_SIGN = _art(
    (
        "........",
        "33333333",
        "30000003",
        "30333303",
        "30000003",
        "33333333",
        "...33...",
        "..3333..",
    ),
    GRASS_BG,
)
_TREE = _art(
    (
        ".....333333.....",
        "...3322222233...",
        "..322121212223..",
        ".32212121212223.",
        ".32121212121223.",
        "3221212121212223",
        "3212121212121223",
        "3221212121212223",
        "3222121212122223",
        ".32222222222223.",
        ".33222222222233.",
        "..333222222333..",
        "....33322333....",
        "......3003......",
        "......3003......",
        ".....330033.....",
    ),
    GRASS_BG,
)

# House pieces: roof shingles over plank walls, outlined in the darkest shade.
_ROOF = _art(
    (
        "22232222",
        "22232222",
        "22232222",
        "33333333",
        "22222223",
        "22222223",
        "22222223",
        "33333333",
    )
)
_WALL = _art(
    (
        "00000000",
        "00000000",
        "11111111",
        "00000000",
        "00000000",
        "00000000",
        "11111111",
        "00000000",
    )
)
_DOOR = _art(
    (
        "03333330",
        "03222230",
        "03222230",
        "03222230",
        "03222030",
        "03222230",
        "03222230",
        "03222230",
    )
)
_WINDOW_PANE = _art(
    (
        "333333",
        "301113",
        "310113",
        "311113",
        "333333",
    )
)


def _outlined(
    tile: np.ndarray, top: bool = False, bottom: bool = False, left: bool = False, right: bool = False
) -> np.ndarray:
    """Copy of `tile` with the chosen edges drawn in the darkest shade (building outlines)."""
    tile = tile.copy()
    if top:
        tile[0, :] = 3
    if bottom:
        tile[-1, :] = 3
    if left:
        tile[:, 0] = 3
    if right:
        tile[:, -1] = 3
    return tile


# Dialog-box pieces: lightest fill with a darkest double border.
_BOX_TOP_LEFT = _art(
    (
        "........",
        ".3333333",
        ".3......",
        ".3.33333",
        ".3.3....",
        ".3.3....",
        ".3.3....",
        ".3.3....",
    )
)
_BOX_TOP = _art(
    (
        "........",
        "33333333",
        "........",
        "33333333",
        "........",
        "........",
        "........",
        "........",
    )
)
_BOX_LEFT = _art((".3.3....",) * 8)
_BOX_ARROW = _art(
    (
        "........",
        "........",
        "3333333.",
        ".33333..",
        "..333...",
        "...3....",
        "........",
        "........",
    )
)

# A 5x7 bitmap font, drawn in 8x8 cells like the Game Boy's text tiles.
_FONT: dict[str, tuple[str, ...]] = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("####.", "....#", "....#", ".###.", "....#", "....#", "####."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    " ": (".....",) * 7,
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    "!": ("..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."),
    "?": (".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."),
    "'": ("..#..", "..#..", ".#...", ".....", ".....", ".....", "....."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    "-": (".....", ".....", ".....", ".###.", ".....", ".....", "....."),
}


def _glyph_tile(rows: tuple[str, ...]) -> np.ndarray:
    """A font glyph in an 8x8 cell: 1px left margin, 2px right, blank bottom row."""
    tile = np.zeros((TILE, TILE), dtype=np.uint8)
    tile[0:7, 1:6] = np.array([[3 if ch == "#" else 0 for ch in row] for row in rows], dtype=np.uint8)
    return tile


class _Atlas:
    """Every tile used on screen, as shade-index arrays, in two animation phases.

    Water ripples and flowers sway by switching phase; everything else is the
    same in both. `walkable[tile_id]` says whether the player may stand on it.
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self._phases: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        self._walkable: list[bool] = []

    def add(self, name: str, tile: np.ndarray | tuple[np.ndarray, np.ndarray], walkable: bool = False) -> int:
        first, second = tile if isinstance(tile, tuple) else (tile, tile)
        if first.shape != (TILE, TILE) or second.shape != (TILE, TILE):
            raise ValueError(f"tile {name!r} is not 8x8")
        self.ids[name] = len(self._walkable)
        self._phases[0].append(first)
        self._phases[1].append(second)
        self._walkable.append(walkable)
        return self.ids[name]

    def freeze(self) -> None:
        self.tiles = np.stack([np.stack(phase) for phase in self._phases])  # (2, n, 8, 8)
        self.walkable = np.array(self._walkable, dtype=bool)


def _build_atlas() -> _Atlas:
    atlas = _Atlas()
    atlas.add("grass", _GRASS, walkable=True)
    atlas.add("tall_grass", _TALL_GRASS, walkable=True)
    atlas.add("path", _PATH, walkable=True)
    atlas.add("flower", _FLOWER, walkable=True)
    # Water in 16 variants: the bits of the variant number say which sides meet the shore.
    for sides in range(16):
        edges = dict(top=bool(sides & 1), bottom=bool(sides & 2), left=bool(sides & 4), right=bool(sides & 8))
        atlas.add(f"water_{sides}", (_outlined(_WATER[0], **edges), _outlined(_WATER[1], **edges)))
    atlas.add("fence", _FENCE)
    atlas.add("sign", _SIGN)
    for part, tile in zip(("tl", "tr", "bl", "br"), _split2x2(_TREE)):
        atlas.add(f"tree_{part}", tile)
    # Roofs: the ridge row has a top outline; gable ends are outlined left/right.
    for row in ("top", "mid"):
        for col in ("l", "m", "r"):
            tile = _outlined(_ROOF, top=row == "top", left=col == "l", right=col == "r")
            atlas.add(f"roof_{row}_{col}", tile)
    # Walls: the bottom row stands on the ground line.
    for row in ("up", "low"):
        for col in ("l", "m", "r"):
            tile = _outlined(_WALL, bottom=row == "low", left=col == "l", right=col == "r")
            atlas.add(f"wall_{row}_{col}", tile)
    window = _WALL.copy()
    window[1:6, 1:7] = _WINDOW_PANE
    atlas.add("window", window)
    atlas.add("door", _outlined(_DOOR, bottom=True))
    # Dialog box: corners and edges are flips of the top-left corner and the top edge.
    atlas.add("box_fill", np.zeros((TILE, TILE), dtype=np.uint8))
    atlas.add("box_tl", _BOX_TOP_LEFT)
    atlas.add("box_tr", _BOX_TOP_LEFT[:, ::-1].copy())
    atlas.add("box_bl", _BOX_TOP_LEFT[::-1, :].copy())
    atlas.add("box_br", _BOX_TOP_LEFT[::-1, ::-1].copy())
    atlas.add("box_t", _BOX_TOP)
    atlas.add("box_b", _BOX_TOP[::-1, :].copy())
    atlas.add("box_l", _BOX_LEFT)
    atlas.add("box_r", _BOX_LEFT[:, ::-1].copy())
    atlas.add("box_arrow", _BOX_ARROW)
    for char, rows in _FONT.items():
        atlas.add(f"glyph_{char}", _glyph_tile(rows))
    atlas.freeze()
    return atlas


_ATLAS = _build_atlas()
_ID = _ATLAS.ids
GRASS, TALL_GRASS, PATH, FLOWER = _ID["grass"], _ID["tall_grass"], _ID["path"], _ID["flower"]
WATER, FENCE, SIGN = _ID["water_0"], _ID["fence"], _ID["sign"]
_WATER_IDS = np.array([_ID[f"water_{sides}"] for sides in range(16)])
TREE_TL, TREE_TR, TREE_BL, TREE_BR = (_ID[f"tree_{p}"] for p in ("tl", "tr", "bl", "br"))


# ---------------------------------------------------------------------------
# World generation: one tile map per episode, larger than the screen.
# ---------------------------------------------------------------------------


def _free(tiles: np.ndarray, top: int, left: int, height: int, width: int, margin: int = 0) -> bool:
    """True if the box (plus `margin` tiles around it) is inside the map and all plain grass."""
    rows, cols = tiles.shape
    first_row, first_col = top - margin, left - margin
    end_row, end_col = top + height + margin, left + width + margin
    if first_row < 0 or first_col < 0 or end_row > rows or end_col > cols:
        return False
    return bool((tiles[first_row:end_row, first_col:end_col] == GRASS).all())


def _find_spot(
    tiles: np.ndarray, rng: np.random.Generator, height: int, width: int, margin: int = 1, attempts: int = 60
) -> tuple[int, int] | None:
    """A random top-left corner where a height x width box (plus margin) is open grass, or None."""
    rows, cols = tiles.shape
    if rows - height - 2 <= 2 or cols - width - 2 <= 2:
        return None
    for _ in range(attempts):
        top, left = int(rng.integers(2, rows - height - 2)), int(rng.integers(2, cols - width - 2))
        if _free(tiles, top, left, height, width, margin):
            return top, left
    return None


def _place_tree(tiles: np.ndarray, top: int, left: int) -> None:
    tiles[top : top + 2, left : left + 2] = ((TREE_TL, TREE_TR), (TREE_BL, TREE_BR))


def _carve_path(tiles: np.ndarray, top: int, left: int, height: int, width: int) -> None:
    tiles[max(top, 0) : top + height, max(left, 0) : left + width] = PATH


def _house_tiles(width: int, roof_rows: int, wall_rows: int, door_col: int) -> np.ndarray:
    """Tile ids of a house `width` tiles wide: roof rows over wall rows, door in the bottom row."""
    cols = ["l"] + ["m"] * (width - 2) + ["r"]
    house = np.empty((roof_rows + wall_rows, width), dtype=np.int16)
    for r in range(roof_rows):
        row = "top" if r == 0 else "mid"
        house[r] = [_ID[f"roof_{row}_{c}"] for c in cols]
    for r in range(wall_rows):
        row = "low" if r == wall_rows - 1 else "up"
        house[roof_rows + r] = [_ID[f"wall_{row}_{c}"] for c in cols]
    # Windows on the upper wall row, spaced every other tile, skipping the door.
    window_row = roof_rows + max(wall_rows - 2, 0)
    for c in range(1, width - 1, 2):
        if c != door_col:
            house[window_row, c] = _ID["window"]
    house[-1, door_col] = _ID["door"]
    return house


def _place_house(tiles: np.ndarray, rng: np.random.Generator) -> bool:
    """Put one house on open grass with a short path from its door down to a path; False if none fits."""
    rows, cols = tiles.shape
    width = int(rng.choice([5, 6, 8])) if rng.random() < 0.8 else 10
    roof_rows = int(rng.integers(2, 4))
    wall_rows = 2 if width < 10 else 3
    height = roof_rows + wall_rows
    for _ in range(200):
        top = int(rng.integers(2, rows - height - 3))
        left = int(rng.integers(2, cols - width - 2))
        if not _free(tiles, top, left, height, width, margin=1):
            continue
        door_col = int(rng.integers(1, width - 1))
        door_x = left + door_col
        # The door must reach a path by walking straight down over grass.
        y = top + height
        while y < rows and tiles[y, door_x] == GRASS and y - (top + height) < 8:
            y += 1
        if y >= rows or tiles[y, door_x] != PATH:
            continue
        tiles[top : top + height, left : left + width] = _house_tiles(width, roof_rows, wall_rows, door_col)
        tiles[top + height : y, door_x] = PATH
        below = top + height
        # A yard: flowers along the front, sometimes a fence with a gate for the path.
        for x in range(left, left + width):
            if tiles[below, x] == GRASS and rng.random() < 0.35:
                tiles[below, x] = FLOWER
        if y - below >= 3 and rng.random() < 0.6:
            fence_row = below + 1
            for x in range(left - 1, left + width + 1):
                if tiles[fence_row, x] == GRASS:
                    tiles[fence_row, x] = FENCE
        sign_x = door_x + (2 if rng.random() < 0.5 else -2)
        if rng.random() < 0.5 and 0 <= sign_x < cols and tiles[below, sign_x] in (GRASS, FLOWER):
            tiles[below, sign_x] = SIGN
        return True
    return False


def _place_pond(tiles: np.ndarray, rng: np.random.Generator) -> None:
    for _ in range(10):
        height, width = int(rng.integers(3, 7)), int(rng.integers(4, 11))
        spot = _find_spot(tiles, rng, height, width, attempts=20)
        if spot is not None:
            top, left = spot
            pond = tiles[top : top + height, left : left + width]
            pond[:] = WATER
            if height >= 4 and width >= 4:  # round the corners off
                pond[0, 0] = pond[0, -1] = pond[-1, 0] = pond[-1, -1] = GRASS
            _outline_water(tiles)
            return


def _outline_water(tiles: np.ndarray) -> None:
    """Swap each water tile for the variant outlined on the sides that border land."""
    wet = np.isin(tiles, _WATER_IDS)
    padded = np.pad(wet, 1, constant_values=True)
    sides = (
        (~padded[:-2, 1:-1]).astype(np.int16)  # land above
        | (~padded[2:, 1:-1]).astype(np.int16) << 1  # land below
        | (~padded[1:-1, :-2]).astype(np.int16) << 2  # land left
        | (~padded[1:-1, 2:]).astype(np.int16) << 3  # land right
    )
    tiles[wet] = _WATER_IDS[sides[wet]]


def _place_tall_grass(tiles: np.ndarray, rng: np.random.Generator) -> None:
    rows, cols = tiles.shape
    height, width = int(rng.integers(3, 7)), int(rng.integers(4, 10))
    top = int(rng.integers(2, rows - height - 2))
    left = int(rng.integers(2, cols - width - 2))
    area = tiles[top : top + height, left : left + width]
    area[area == GRASS] = TALL_GRASS


def generate_world(rng: np.random.Generator, rows: int = WORLD_ROWS, cols: int = WORLD_COLS) -> np.ndarray:
    """A (rows, cols) map of tile ids: a route-like area walled by trees.

    Paths are carved first (a crossroads that leaves the map through gaps in the
    tree border), then houses that face a path, a pond, tall grass, lone trees
    and flowers fill the open grass, so nothing overlaps.
    """
    if rows % 2 or cols % 2 or rows < VIEW_ROWS + 4 or cols < VIEW_COLS + 4:
        raise ValueError(f"world must be even-sized and larger than the screen, got {rows}x{cols}")
    tiles = np.full((rows, cols), GRASS, dtype=np.int16)
    # A horizontal road across the map and two vertical roads joining it, 2 tiles wide.
    road_y = 2 * int(rng.integers(rows // 8, 3 * rows // 8))
    up_x = 2 * int(rng.integers(3, cols // 2 - 2))
    down_x = 2 * int(rng.integers(3, cols // 2 - 2))
    _carve_path(tiles, road_y, 0, 2, cols)
    _carve_path(tiles, 0, up_x, road_y, 2)
    _carve_path(tiles, road_y, down_x, rows - road_y, 2)
    if rng.random() < 0.7:  # a side street off the northern road
        street_y = 2 * int(rng.integers(3, max(road_y // 2 - 2, 4)))
        length = 2 * int(rng.integers(3, 8))
        start = up_x + 2 if rng.random() < 0.5 else up_x - length
        _carve_path(tiles, street_y, max(start, 2), 2, min(length, cols - 2 - max(start, 2)))
    # Tree border two tiles thick, ragged inside, with gaps where the roads leave.
    for top in range(0, rows, 2):
        for left in range(0, cols, 2):
            edge = top in (0, rows - 2) or left in (0, cols - 2)
            inner = top in (2, rows - 4) or left in (2, cols - 4)
            if (edge or (inner and rng.random() < 0.35)) and _free(tiles, top, left, 2, 2):
                _place_tree(tiles, top, left)
    for _ in range(int(rng.integers(2, 6))):
        _place_house(tiles, rng)
    if rng.random() < 0.85:
        _place_pond(tiles, rng)
    for _ in range(int(rng.integers(1, 4))):
        _place_tall_grass(tiles, rng)
    for _ in range(int(rng.integers(2, 5))):  # small woods
        trees_y, trees_x = int(rng.integers(1, 3)), int(rng.integers(2, 4))
        spot = _find_spot(tiles, rng, 2 * trees_y, 2 * trees_x)
        if spot is not None:
            for ty in range(trees_y):
                for tx in range(trees_x):
                    _place_tree(tiles, spot[0] + 2 * ty, spot[1] + 2 * tx)
    for _ in range(int(rng.integers(8, 16))):  # lone trees
        spot = _find_spot(tiles, rng, 2, 2, attempts=10)
        if spot is not None:
            _place_tree(tiles, *spot)
    for _ in range(int(rng.integers(3, 7))):
        top, left = int(rng.integers(2, rows - 4)), int(rng.integers(2, cols - 4))
        patch = tiles[top : top + 2, left : left + 3]
        patch[(patch == GRASS) & (rng.random(patch.shape) < 0.6)] = FLOWER
    return tiles


# ---------------------------------------------------------------------------
# The player: a 16x16 sprite walking tile by tile, and the camera that follows.
# ---------------------------------------------------------------------------


def _sprite(rows: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(shade indices, opaque mask) from 16x16 art where '.' is transparent."""
    mask = np.array([[ch != "." for ch in row] for row in rows], dtype=bool)
    return _art(rows), mask


_HEAD_DOWN = (
    ".....333333.....",
    "....32222223....",
    "...3222002223...",
    "...3222222223...",
    "..333333333333..",
    "...3300000033...",
    "...3030000303...",
    "...3000000003...",
    "....30000003....",
)
_HEAD_UP = (
    ".....333333.....",
    "....32222223....",
    "...3222222223...",
    "...3222222223...",
    "..333333333333..",
    "...3333333333...",
    "...3322222233...",
    "...3332222333...",
    "....33333333....",
)
_HEAD_LEFT = (
    ".....333333.....",
    "....32222223....",
    "...3222222223...",
    "...3222222223...",
    ".33333333333....",
    "...3000003333...",
    "...3030003223...",
    "...3000003223...",
    "....3000033.....",
)
_BODY_FRONT = (
    "...3322002233...",
    "..302222222203..",
    "..300222222003..",
    "...3311111133...",
)
_BODY_SIDE = (
    "....33222223....",
    "....30222223....",
    "....30022223....",
    "....33111113....",
)
_LEGS_FRONT = ("....31111113....", "....31133113....", ".....33..33.....")
_LEGS_FRONT_STEP = ("....31111113....", "....3113.333....", ".....33.........")
_LEGS_SIDE = ("....3111113.....", "....3113113.....", ".....33.33......")
_LEGS_SIDE_STEP = ("....3111113.....", "...31133.3113...", "...333.....333..")


def _player_sprites() -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """Sprites by (facing, walk frame): frame 0 stands, 1 and 2 step with either foot."""
    sprites: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    for facing, head, body in (("down", _HEAD_DOWN, _BODY_FRONT), ("up", _HEAD_UP, _BODY_FRONT)):
        sprites[facing, 0] = _sprite(head + body + _LEGS_FRONT)
        step = _sprite(head + body + _LEGS_FRONT_STEP)
        sprites[facing, 1] = step
        sprites[facing, 2] = (step[0][:, ::-1], step[1][:, ::-1])
    for frame, legs in ((0, _LEGS_SIDE), (1, _LEGS_SIDE_STEP), (2, _LEGS_SIDE_STEP)):
        left = _sprite(_HEAD_LEFT + _BODY_SIDE + legs)
        sprites["left", frame] = left
        sprites["right", frame] = (left[0][:, ::-1], left[1][:, ::-1])
    return sprites


_SPRITES = _player_sprites()
_DIRECTIONS: dict[str, tuple[int, int]] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
_OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left"}


class _Walker:
    """A random walk with momentum over walkable tiles; the camera keeps the player near the centre.

    The player covers 2x2 tiles and moves one tile (8 px) per frame; the camera
    scrolls one tile only when the player leaves a small box around the centre,
    so most frames change in a small region and some by a one-tile scroll.
    """

    KEEP_GOING = 0.8
    PAUSE = 0.08

    def __init__(self, tiles: np.ndarray, rng: np.random.Generator) -> None:
        self.rng = rng
        walk = _ATLAS.walkable[tiles]
        # fits[y, x]: the 2x2 footprint with top-left (y, x) is all walkable.
        self.fits = walk[:-1, :-1] & walk[1:, :-1] & walk[:-1, 1:] & walk[1:, 1:]
        on_path = tiles == PATH
        path_fits = on_path[:-1, :-1] & on_path[1:, :-1] & on_path[:-1, 1:] & on_path[1:, 1:]
        starts = np.argwhere(path_fits if path_fits.any() else self.fits)
        self.y, self.x = (int(v) for v in starts[rng.integers(len(starts))])
        self.heading = str(rng.choice(list(_DIRECTIONS)))
        self.facing = self.heading
        self.frame = 0
        self.steps = 0
        rows, cols = tiles.shape
        self.max_cam = (rows - VIEW_ROWS, cols - VIEW_COLS)
        self.cam_y = int(np.clip(self.y - (VIEW_ROWS - 2) // 2, 0, self.max_cam[0]))
        self.cam_x = int(np.clip(self.x - (VIEW_COLS - 2) // 2, 0, self.max_cam[1]))

    def _can(self, direction: str) -> bool:
        dy, dx = _DIRECTIONS[direction]
        y, x = self.y + dy, self.x + dx
        return 0 <= y < self.fits.shape[0] and 0 <= x < self.fits.shape[1] and bool(self.fits[y, x])

    def stand(self) -> None:
        """Stay put (e.g. while a dialog is open)."""
        self.frame = 0

    def step(self) -> None:
        """One frame of walking: usually keep heading, turn at obstacles, now and then pause."""
        rng = self.rng
        options = [d for d in _DIRECTIONS if self._can(d)]
        if not options or rng.random() < self.PAUSE:
            # Pausing still looks around, so the frame usually changes.
            self.facing = str(rng.choice(list(_DIRECTIONS)))
            self.frame = 0
            return
        if self.heading in options and rng.random() < self.KEEP_GOING:
            direction = self.heading
        else:
            forward = [d for d in options if d != _OPPOSITE[self.heading]] or options
            direction = forward[int(rng.integers(len(forward)))]
        dy, dx = _DIRECTIONS[direction]
        self.y, self.x = self.y + dy, self.x + dx
        self.heading = self.facing = direction
        self.steps += 1
        self.frame = 1 + self.steps % 2
        self._follow()

    def _follow(self) -> None:
        """Scroll the camera one tile when the player leaves the box around the screen centre."""
        sy, sx = self.y - self.cam_y, self.x - self.cam_x
        if sy < 6:
            self.cam_y = self.y - 6
        elif sy > 10:
            self.cam_y = self.y - 10
        if sx < 7:
            self.cam_x = self.x - 7
        elif sx > 11:
            self.cam_x = self.x - 11
        self.cam_y = int(np.clip(self.cam_y, 0, self.max_cam[0]))
        self.cam_x = int(np.clip(self.cam_x, 0, self.max_cam[1]))

    def sprite(self) -> tuple[np.ndarray, np.ndarray]:
        return _SPRITES[self.facing, self.frame]


# ---------------------------------------------------------------------------
# Dialog: random Pokémon-ish lines, typed out in the bottom box.
# ---------------------------------------------------------------------------

DIALOG_TOP_ROW = 12  # the box covers tile rows 12..17
DIALOG_BOX: Box = (DIALOG_TOP_ROW * TILE, 0, SCREEN_H, SCREEN_W)  # (top, left, bottom, right), exclusive
_LINE_CHARS = VIEW_COLS - 3  # text in columns 1..17; column 18 holds the arrow

_NAMES = ("PROF.OAK", "MOM", "GARY", "LASS", "YOUNGSTER", "HIKER", "NURSE", "OLD MAN", "BUG CATCHER", "SAILOR")
_PHRASES = (
    "HELLO THERE!",
    "WELCOME TO THE WORLD OF POKEMON!",
    "I LIKE SHORTS! THEY'RE COMFY AND EASY TO WEAR!",
    "WAIT! DON'T GO OUT! IT'S UNSAFE!",
    "WILD POKEMON LIVE IN TALL GRASS.",
    "TECHNOLOGY IS INCREDIBLE!",
    "YOUR POKEMON LOOK TIRED.",
    "LET'S BATTLE!",
    "I'M RAISING POKEMON TOO!",
    "THE SEA IS SO BIG!",
    "DID YOU SEE THAT?",
    "BUG POKEMON EVOLVE QUICKLY.",
    "WE HOPE TO SEE YOU AGAIN!",
    "I'M TOO TIRED TO WALK.",
)
_MONS = ("PIDGEY", "RATTATA", "CATERPIE", "WEEDLE", "ODDISH", "PIKACHU", "SPEAROW", "ZUBAT", "MAGIKARP", "EEVEE",
         "ABRA")
_ITEMS = ("POTION", "POKE BALL", "ANTIDOTE", "ESCAPE ROPE", "TM01", "OAK'S PARCEL", "RARE CANDY", "REPEL")
_MOVES = ("TACKLE", "GROWL", "EMBER", "THUNDERSHOCK", "QUICK ATTACK", "GUST", "STRING SHOT", "SPLASH")
_PLACES = ("PALLET TOWN", "ROUTE 1", "VIRIDIAN CITY", "PEWTER CITY", "ROUTE 22", "CERULEAN CITY")
_SIGNS = ("SHADES OF YOUR JOURNEY AWAIT!", "A BEAUTIFUL CITY!", "NO TRESPASSING!", "BEWARE OF WILD POKEMON!")


def random_message(rng: np.random.Generator) -> str:
    """One line of plausible overworld/battle text, built from small word lists."""

    def pick(words: Sequence[str]) -> str:
        return words[int(rng.integers(len(words)))]

    templates = (
        lambda: f"{pick(_NAMES)}: {pick(_PHRASES)}",
        lambda: f"{pick(_NAMES)}: {pick(_PHRASES)}",
        lambda: f"A WILD {pick(_MONS)} APPEARED!",
        lambda: f"{pick(_NAMES)} WANTS TO FIGHT!",
        lambda: f"GO! {pick(_MONS)}!",
        lambda: f"{pick(_MONS)} USED {pick(_MOVES)}! IT'S SUPER EFFECTIVE!",
        lambda: f"RED GOT {pick(_ITEMS)}!",
        lambda: f"{pick(_MONS)} GREW TO LEVEL {int(rng.integers(2, 60))}!",
        lambda: f"{pick(_PLACES)} - {pick(_SIGNS)}",
        lambda: "THE DOOR IS LOCKED.",
    )
    return templates[int(rng.integers(len(templates)))]()


def wrap_text(text: str, width: int = _LINE_CHARS) -> list[str]:
    """Greedy word wrap to `width` characters; over-long words are split."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        while len(word) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= width:
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines or [""]


def _box_tiles(lines: Sequence[str], shown: int, arrow: bool) -> np.ndarray:
    """Tile ids of the 6x20 dialog box with the first `shown` characters of `lines` typed."""
    rows, cols = VIEW_ROWS - DIALOG_TOP_ROW, VIEW_COLS
    box = np.full((rows, cols), _ID["box_fill"], dtype=np.int16)
    box[0, :], box[-1, :] = _ID["box_t"], _ID["box_b"]
    box[:, 0], box[:, -1] = _ID["box_l"], _ID["box_r"]
    box[0, 0], box[0, -1], box[-1, 0], box[-1, -1] = _ID["box_tl"], _ID["box_tr"], _ID["box_bl"], _ID["box_br"]
    for line_no, line in enumerate(lines[:2]):
        visible = line[: max(shown, 0)]
        shown -= len(line)
        for i, char in enumerate(visible):
            box[2 + 2 * line_no, 1 + i] = _ID.get(f"glyph_{char}", _ID["glyph_ "])
    if arrow:
        box[4, cols - 2] = _ID["box_arrow"]
    return box


def _dialog_run(rng: np.random.Generator, length: int) -> list[np.ndarray]:
    """Box tiles for `length` frames: text typed a few characters per frame, page by page.

    When a page is complete the ▼ arrow blinks for a few frames before the next
    page, so consecutive dialog frames still differ a little.
    """
    lines = wrap_text(random_message(rng))
    pages = [lines[i : i + 2] for i in range(0, len(lines), 2)]
    speed = int(rng.integers(5, 12))
    page, shown, held = 0, 0, 0
    frames = []
    for _ in range(length):
        total = sum(len(line) for line in pages[page])
        shown = min(total, shown + speed)
        done = shown >= total
        frames.append(_box_tiles(pages[page], shown, arrow=done and held % 2 == 0))
        if done:
            held += 1
            if held >= 3 and page + 1 < len(pages):
                page, shown, held = page + 1, 0, 0
    return frames


def _dialog_schedule(rng: np.random.Generator, n_frames: int) -> list[np.ndarray | None]:
    """Per frame, the dialog box tiles or None: runs of 5-20 frames, about a quarter of all frames."""
    schedule: list[np.ndarray | None] = [None] * n_frames
    start = int(rng.integers(5, 40))
    while start < n_frames:
        length = min(int(rng.integers(5, 21)), n_frames - start)
        schedule[start : start + length] = _dialog_run(rng, length)
        start += length + int(rng.integers(15, 61))
    return schedule


# ---------------------------------------------------------------------------
# Frame rendering: tile blits into a shade-index image, then the palette.
# ---------------------------------------------------------------------------


def _blit(tile_ids: np.ndarray, phase: int) -> np.ndarray:
    """Shade-index pixels of a tile map: (rows, cols) ids -> (rows*8, cols*8)."""
    rows, cols = tile_ids.shape
    pixels = _ATLAS.tiles[phase][tile_ids]  # (rows, cols, 8, 8)
    return pixels.transpose(0, 2, 1, 3).reshape(rows * TILE, cols * TILE)


def render_episode_indices(
    rng: np.random.Generator, n_frames: int
) -> Iterator[tuple[np.ndarray, Box | None]]:
    """Yield (shade-index frame (144, 160) uint8, dialog box or None) for one episode.

    Shade indices are 0 (lightest) to 3 (darkest); map them through a palette for RGB.
    """
    world = generate_world(rng)
    walker = _Walker(world, rng)
    dialogs = _dialog_schedule(rng, n_frames)
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


# ---------------------------------------------------------------------------
# Dataset writer.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameInfo:
    """What the generator knows about one written frame (one entry of synth_index.json)."""

    key: str  # relative posix path, e.g. "game1/episode1/frame_001.png"
    game: int
    episode: int
    frame: int
    has_dialog: bool
    dialog_box: Box | None  # (top, left, bottom, right) in pixels, bottom/right exclusive
    palette: Palette  # 4 RGB shades, lightest first

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FrameInfo:
        box = data.get("dialog_box")
        return cls(
            key=str(data["key"]),
            game=int(data["game"]),
            episode=int(data["episode"]),
            frame=int(data["frame"]),
            has_dialog=bool(data["has_dialog"]),
            dialog_box=tuple(int(v) for v in box) if box is not None else None,  # type: ignore[arg-type]
            palette=tuple(tuple(int(c) for c in rgb) for rgb in data["palette"]),  # type: ignore[arg-type]
        )


def frame_key(game: int, episode: int, frame: int) -> str:
    return f"game{game}/episode{episode}/frame_{frame:03d}.png"


def load_index(out_dir: str | Path) -> list[FrameInfo]:
    """Read `out_dir/synth_index.json` back (e.g. so metrics can find the dialog boxes)."""
    with open(Path(out_dir) / ANNOTATIONS_NAME, encoding="utf-8") as fh:
        return [FrameInfo.from_json(item) for item in json.load(fh)]


_KEY_PATTERN = re.compile(r"game\d+/episode\d+/frame_\d+\.png")


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete frames an earlier run listed in its index but this run did not write.

    Only files the previous index names are touched, so a smaller re-run into the
    same folder does not leave old frames that a loader would pick up.
    """
    try:
        previous = load_index(out_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return
    removed = 0
    for info in previous:
        if info.key in keep or not _KEY_PATTERN.fullmatch(info.key):
            continue
        path = out_dir / info.key
        if path.is_file():
            path.unlink()
            removed += 1
            for folder in (path.parent, path.parent.parent):
                try:
                    folder.rmdir()  # only succeeds once empty
                except OSError:
                    break
    if removed:
        log.info("removed %d frames left by an earlier synthetic run in %s", removed, out_dir)


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def generate_dataset(
    out_dir: str | Path, games: int = 2, episodes: int = 3, frames: int = 100, seed: int = 0
) -> list[FrameInfo]:
    """Write `games` x `episodes` x `frames` synthetic frames plus synth_index.json under `out_dir`.

    Files go to `out_dir/game{g}/episode{e}/frame_{n:03d}.png` (all 1-based), and
    `out_dir/synth_index.json` lists the returned FrameInfos (see the module
    docstring). Game g uses `PALETTES[(g - 1) % len(PALETTES)]`; each episode
    has its own world. Same arguments give byte-identical files. Existing files
    are overwritten; frames named in a previous index and not rewritten are deleted.
    """
    _check_count("games", games, 1)
    _check_count("episodes", episodes, 1)
    _check_count("frames", frames, 1)
    _check_count("seed", seed, 0)
    root = Path(out_dir)
    infos: list[FrameInfo] = []
    for game in range(1, games + 1):
        palette = palette_for_game(game)
        for episode in range(1, episodes + 1):
            folder = root / f"game{game}" / f"episode{episode}"
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([int(seed), game, episode])
            for n, (pixels, box) in enumerate(render_episode(rng, palette, frames), start=1):
                key = frame_key(game, episode, n)
                Image.fromarray(pixels, "RGB").save(root / key, format="PNG", optimize=False, compress_level=6)
                infos.append(FrameInfo(key, game, episode, n, box is not None, box, palette))
    _remove_stale(root, {info.key for info in infos})
    index_path = root / ANNOTATIONS_NAME
    tmp_path = index_path.with_name(f".{ANNOTATIONS_NAME}.tmp")
    tmp_path.write_text(json.dumps([info.to_json() for info in infos], indent=1), encoding="utf-8")
    os.replace(tmp_path, index_path)
    dialog = sum(info.has_dialog for info in infos)
    log.info("wrote %d synthetic frames (%d with dialog) to %s", len(infos), dialog, root)
    return infos
