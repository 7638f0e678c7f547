"""Tile art (terrain, trees, houses, the dialog box's border) and the atlas that numbers every tile.

Every tile is an 8x8 array of shade indices (0 lightest .. 3 darkest), drawn once at import.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pokevq.gameboy import SCREEN_H, SCREEN_W, TILE
from pokevq.synth.font import GLYPHS

VIEW_COLS, VIEW_ROWS = SCREEN_W // TILE, SCREEN_H // TILE  # the screen in tiles: 20 x 18


def art(rows: Sequence[str], bg: str = "0") -> np.ndarray:
    """Shade-index array from ASCII art; '.' is the background shade `bg`."""
    text = [row.replace(".", bg) for row in rows]
    if len({len(row) for row in text}) != 1:
        raise ValueError(f"ragged tile art: {rows}")
    return np.array([[int(ch) for ch in row] for row in text], dtype=np.uint8)


def _split2x2(block: np.ndarray) -> list[np.ndarray]:
    """A 16x16 block as its four 8x8 tiles: top-left, top-right, bottom-left, bottom-right."""
    return [block[:8, :8], block[:8, 8:], block[8:, :8], block[8:, 8:]]


GRASS_BG = "1"  # grass sits on the second-lightest shade; paths are the lightest

_GRASS = art(
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
_TALL_GRASS = art(
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
_PATH = art(
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
    art(
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
    art(
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
    art(
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
    art(
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
_FENCE = art(
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
_SIGN = art(
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
_TREE = art(
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
_ROOF = art(
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
_WALL = art(
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
_DOOR = art(
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
_WINDOW_PANE = art(
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
_BOX_TOP_LEFT = art(
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
_BOX_TOP = art(
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
_BOX_LEFT = art((".3.3....",) * 8)
_BOX_ARROW = art(
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


# The atlas: every tile above plus the font's glyphs, numbered in the order they are added.


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
    for char, tile in GLYPHS.items():
        atlas.add(f"glyph_{char}", tile)
    atlas.freeze()
    return atlas


ATLAS = _build_atlas()
TILE_ID = ATLAS.ids
GRASS, TALL_GRASS, PATH, FLOWER = TILE_ID["grass"], TILE_ID["tall_grass"], TILE_ID["path"], TILE_ID["flower"]
WATER, FENCE, SIGN = TILE_ID["water_0"], TILE_ID["fence"], TILE_ID["sign"]
WATER_IDS = np.array([TILE_ID[f"water_{sides}"] for sides in range(16)])
TREE_TL, TREE_TR, TREE_BL, TREE_BR = (TILE_ID[f"tree_{p}"] for p in ("tl", "tr", "bl", "br"))
