"""Where the µCity validation tiles that training never shows come from.

    python -m benchmarks.ucity_unseen --data-dir DIR     # DIR made by python -m benchmarks.ucity_frames --out DIR

Every 8x8 tile on the code grid of a validation frame is "unseen" when no training frame holds the same
tile on its grid: the exact dictionary cannot give it back. Each unseen position is counted by where it
lies (the map, the status bar, or a screen outside the map: menus, text entry, map generation, budget,
graphs), whether the frame's map was scrolled off the 8-pixel grid, whether a sprite (the cursor, menu
icons) overlaps it, and whether the same 8x8 patch occurs in training at some other pixel offset (then a
dictionary of patches at every offset would have it). The facts come from DIR/ucity_index.json.
Needs numpy and pillow only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.ucity_frames import INDEX_NAME, SPLIT, load_split

TILE = 8
ROWS, COLUMNS = 18, 20


def colour_ids(path: Path) -> np.ndarray:
    """(144, 160) int64: each pixel's RGB packed in one number."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def grid_tiles(ids: np.ndarray) -> np.ndarray:
    """(18, 20, 64) the frame's tiles on the 8-pixel grid."""
    return ids.reshape(ROWS, TILE, COLUMNS, TILE).transpose(0, 2, 1, 3).reshape(ROWS, COLUMNS, TILE * TILE)


WEIGHTS = np.random.default_rng(0).integers(1, 2**63, size=TILE * TILE, dtype=np.uint64)


def patch_hashes(patches: np.ndarray) -> np.ndarray:
    """(..., 64) patches -> (...,) uint64 keys: a random linear hash modulo 2**64 (a false match ~ 2**-64)."""
    flat = patches.reshape(-1, TILE * TILE).astype(np.uint64)
    with np.errstate(over="ignore"):
        return (flat @ WEIGHTS).reshape(patches.shape[:-1])


def every_offset(ids: np.ndarray) -> np.ndarray:
    """Hashes of the frame's 8x8 patches at every pixel offset."""
    windows = np.lib.stride_tricks.sliding_window_view(ids, (TILE, TILE))
    return patch_hashes(windows.reshape(*windows.shape[:2], TILE * TILE)).ravel()


def sprite_mask(sprites: list[list[int]], height: int) -> np.ndarray:
    """(18, 20) bool: grid tiles a sprite overlaps."""
    mask = np.zeros((ROWS, COLUMNS), dtype=bool)
    for x, y in sprites:  # pixels x..x+7, y..y+height-1, clipped to the screen
        top, bottom = max(0, y) // TILE, min(ROWS * TILE - 1, y + height - 1) // TILE + 1
        left, right = max(0, x) // TILE, min(COLUMNS * TILE - 1, x + TILE - 1) // TILE + 1
        mask[top:bottom, left:right] = True
    return mask


def analyse(data_dir: Path, split: dict[str, Any]) -> dict[str, Any]:
    index = json.loads((data_dir / INDEX_NAME).read_text(encoding="utf-8"))["frames"]
    validation = set(split["validation"])
    train = [f for f in index if f["episode"] not in validation]
    val = [f for f in index if f["episode"] in validation]
    seen = {bytes(t) for f in train for t in grid_tiles(colour_ids(data_dir / f["key"])).reshape(-1, 64).astype(
        np.uint32)}

    unseen: list[tuple[dict[str, Any], np.ndarray, np.ndarray]] = []  # (facts, mask, tiles)
    for facts in val:
        tiles = grid_tiles(colour_ids(data_dir / facts["key"]))
        mask = np.array([bytes(t) not in seen for t in tiles.reshape(-1, 64).astype(np.uint32)]).reshape(ROWS, COLUMNS)
        if mask.any():
            unseen.append((facts, mask, tiles))

    wanted = np.unique(np.concatenate([patch_hashes(tiles[mask]) for _, mask, tiles in unseen]))
    shifted = np.zeros(len(wanted), dtype=bool)  # found in training at some pixel offset
    for facts in train:
        shifted |= np.isin(wanted, every_offset(colour_ids(data_dir / facts["key"])))
    elsewhere = set(wanted[shifted].tolist())
    places: Counter = Counter()
    for facts in val:
        places.update(_place(facts, row) for row in range(ROWS) for _ in range(COLUMNS))

    counts: Counter = Counter()
    for facts, mask, tiles in unseen:
        sprites = sprite_mask(facts["sprites"], facts.get("sprite_height", 8))
        off_grid = facts["scroll"][0] % TILE != 0 or facts["scroll"][1] % TILE != 0
        keys = patch_hashes(tiles)
        for row, column in zip(*np.nonzero(mask)):
            place = _place(facts, row)
            counts[(place, "all")] += 1
            counts[(place, "off-grid frame")] += place == "map" and off_grid
            counts[(place, "sprite over it")] += bool(sprites[row, column])
            counts[(place, "in training at another offset")] += int(keys[row, column]) in elsewhere
    return {"val_positions": len(val) * ROWS * COLUMNS, "unseen_positions": sum(counts[(p, "all")] for p in places),
            "positions": places, "counts": counts, "off_grid_share": _off_grid_share(val)}


def _place(facts: dict[str, Any], row: int) -> str:
    """map, status bar (the window over the map: the status bar, message boxes) or screen (anything else:
    menus, text entry, map generation, the pause menu and its rooms)."""
    if facts["scene"] != "map":
        return "screen"
    return "status bar" if row in facts["window_rows"] else "map"


def _off_grid_share(frames: list[dict[str, Any]]) -> float:
    game = [f for f in frames if f["scene"] == "map"]
    return sum(f["scroll"][0] % TILE != 0 or f["scroll"][1] % TILE != 0 for f in game) / max(1, len(game))


def report(found: dict[str, Any]) -> str:
    counts, total = found["counts"], found["unseen_positions"]
    lines = [f"Validation: {total:,} of {found['val_positions']:,} tile positions unseen in training "
             f"({total / found['val_positions']:.2%}); {found['off_grid_share']:.0%} of the validation frames that "
             "show the map are scrolled off the 8-pixel grid.", "",
             "| where | positions | unseen | unseen share there | share of all unseen | in an off-grid frame | "
             "under a sprite | in training at another offset |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for place in ("map", "status bar", "screen"):
        n, there = counts[(place, "all")], found["positions"][place]
        cells = [f"{counts[(place, what)] / max(1, n):.0%}" for what in
                 ("off-grid frame", "sprite over it", "in training at another offset")]
        if place != "map":
            cells[0] = "–"
        lines.append(f"| {place} | {there:,} | {n:,} | {n / max(1, there):.2%} | {n / max(1, total):.0%} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="Frames written by benchmarks.ucity_frames (the split).")
    parser.add_argument("--split", default=str(SPLIT), help="Split file (default: benchmarks/ucity_split.json).")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / INDEX_NAME).is_file():
        print(f"Error: {data_dir / INDEX_NAME} not found: write the frames with "
              f"python -m benchmarks.ucity_frames --out {data_dir}", file=sys.stderr)
        return 2
    print(report(analyse(data_dir, load_split(Path(args.split)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
