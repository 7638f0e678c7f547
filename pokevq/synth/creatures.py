"""Creatures drawn from random shapes: the large battle pictures and the small walking people.

Battle pictures are 56x56 (7x7 tiles), like the games' front sprites: a body and a head from
overlapping ellipses, limbs or ears, a dark outline, a dithered shadow and eyes, usually
mirrored left to right. People are 16x16 in colours 1-3 (colour 0 is transparent, as for
sprites), facing down, up or sideways, with a step frame.
"""

from __future__ import annotations

import numpy as np

MON_SIZE = 56


def _ellipse(size: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return ((y - cy) / max(ry, 1.0)) ** 2 + ((x - cx) / max(rx, 1.0)) ** 2 <= 1.0


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a neighbour outside it."""
    padded = np.pad(mask, 1)
    inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inside


def monster(rng: np.random.Generator, size: int = MON_SIZE) -> np.ndarray:
    """A (size, size) picture in colour indices, 0 where there is no creature."""
    half = size / 2
    body = _ellipse(size, size * rng.uniform(0.55, 0.7), half, size * rng.uniform(0.2, 0.32),
                    size * rng.uniform(0.18, 0.4))
    head_y = size * rng.uniform(0.22, 0.4)
    head = _ellipse(size, head_y, half + size * rng.uniform(-0.08, 0.08), size * rng.uniform(0.14, 0.24),
                    size * rng.uniform(0.14, 0.26))
    mask = body | head
    for _ in range(int(rng.integers(1, 7))):  # ears, horns, arms, feet, wings
        cy, cx = rng.uniform(0.05, 0.95) * size, rng.uniform(0.05, 0.5) * size
        mask |= _ellipse(size, cy, cx, size * rng.uniform(0.04, 0.2), size * rng.uniform(0.03, 0.16))
    symmetric = rng.random() < 0.75
    if symmetric:
        mask |= mask[:, ::-1]
    mask[-1], mask[:, 0], mask[:, -1] = False, False, False
    picture = np.zeros((size, size), dtype=np.uint8)
    fill = int(rng.integers(0, 3))
    y, x = np.mgrid[0:size, 0:size]
    if fill == 0:  # light body, dithered shadow on the lower right
        picture[mask] = 1
        shadow = mask & (y + x > size * rng.uniform(0.9, 1.3)) & ((y + x) % 2 == 0)
        picture[shadow] = 2
    elif fill == 1:  # banded
        period = int(rng.integers(4, 9))
        picture[mask] = np.where((y[mask] // period) % 2 == 0, 1, 2)
    else:  # spotted
        picture[mask] = 1
        for _ in range(int(rng.integers(3, 9))):
            spot = _ellipse(size, rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 5), rng.uniform(2, 5))
            picture[mask & spot] = 2
    picture[_outline(mask)] = 3
    eye_y = int(head_y)
    for ex in (int(half - size * 0.08), int(half + size * 0.06)):
        picture[eye_y - 2 : eye_y + 2, ex : ex + 2] = 3
        picture[eye_y - 2, ex] = 0  # the eye's highlight
    if not symmetric and rng.random() < 0.5:
        picture = picture[:, ::-1].copy()
    return picture


def person(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A walking person's 16x16 frames: 'down', 'up', 'side' and their step frames ('down1', ...)."""
    hair = int(rng.integers(2, 4))
    shirt = int(rng.integers(1, 3))
    frames: dict[str, np.ndarray] = {}
    for facing in ("down", "up", "side"):
        base = np.zeros((16, 16), dtype=np.uint8)
        base[1:8, 4:12] = hair  # head
        if facing == "down":
            base[4:8, 5:11] = 1  # face
            base[5, 6], base[5, 9] = 3, 3  # eyes
        elif facing == "side":
            base[4:8, 4:8] = 1
            base[5, 5] = 3
        base[0, 5:11] = 3
        base[1:8, 3], base[1:8, 12] = 3, 3
        base[8:13, 3:13] = shirt  # body
        base[8:13, 3], base[8:13, 12] = 3, 3
        base[13:16, 5:7], base[13:16, 9:11] = 3, 3  # legs
        frames[facing] = base
        step = base.copy()
        step[13:16, 5:7] = 0
        step[13:15, 4:6] = 3
        frames[f"{facing}1"] = step
    return frames


def ball() -> np.ndarray:
    """An 8x8 ball thrown in battles and lying on the ground, colour 0 transparent."""
    rows = ("..333...", ".32223..", "3222223.", "33333333", "3111113.", ".31113..", "..333...", "........")
    return np.array([[0 if ch == "." else int(ch) for ch in row] for row in rows], dtype=np.uint8)
