"""The player: sprites facing four ways and a walk that steps tile by tile."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pokevq.synth.tiles import ATLAS, PATH, VIEW_COLS, VIEW_ROWS, art


def _sprite(rows: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(shade indices, opaque mask) from 16x16 art where '.' is transparent."""
    mask = np.array([[ch != "." for ch in row] for row in rows], dtype=bool)
    return art(rows), mask


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


class Walker:
    """A random walk with momentum over walkable tiles; the camera keeps the player near the centre.

    The player covers 2x2 tiles and moves one tile (8 px) per frame; the camera
    scrolls one tile only when the player leaves a small box around the centre,
    so most frames change in a small region and some by a one-tile scroll.
    """

    KEEP_GOING = 0.8
    PAUSE = 0.08

    def __init__(self, tiles: np.ndarray, rng: np.random.Generator) -> None:
        self.rng = rng
        walk = ATLAS.walkable[tiles]
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
