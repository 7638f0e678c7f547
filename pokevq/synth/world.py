"""The overworld: a tile map of grass, paths, water, trees and houses, generated per episode."""

from __future__ import annotations

import numpy as np

from pokevq.synth.tiles import (
    FENCE,
    FLOWER,
    GRASS,
    PATH,
    SIGN,
    TALL_GRASS,
    TILE_ID,
    TREE_BL,
    TREE_BR,
    TREE_TL,
    TREE_TR,
    VIEW_COLS,
    VIEW_ROWS,
    WATER,
    WATER_IDS,
)

WORLD_COLS, WORLD_ROWS = 40, 36  # one map per episode, larger than the screen


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
        house[r] = [TILE_ID[f"roof_{row}_{c}"] for c in cols]
    for r in range(wall_rows):
        row = "low" if r == wall_rows - 1 else "up"
        house[roof_rows + r] = [TILE_ID[f"wall_{row}_{c}"] for c in cols]
    # Windows on the upper wall row, spaced every other tile, skipping the door.
    window_row = roof_rows + max(wall_rows - 2, 0)
    for c in range(1, width - 1, 2):
        if c != door_col:
            house[window_row, c] = TILE_ID["window"]
    house[-1, door_col] = TILE_ID["door"]
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
    wet = np.isin(tiles, WATER_IDS)
    padded = np.pad(wet, 1, constant_values=True)
    sides = (
        (~padded[:-2, 1:-1]).astype(np.int16)  # land above
        | (~padded[2:, 1:-1]).astype(np.int16) << 1  # land below
        | (~padded[1:-1, :-2]).astype(np.int16) << 2  # land left
        | (~padded[1:-1, 2:]).astype(np.int16) << 3  # land right
    )
    tiles[wet] = WATER_IDS[sides[wet]]


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
