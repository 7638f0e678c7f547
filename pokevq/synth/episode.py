"""An episode of gameplay: scenes one after another, joined by palette fades and battle flashes.

A recording of real play is 60 Hz frames sampled every few frames (the stride, 2 to 5 here, fixed
per episode). Scenes follow each other as in play: walking about the overworld, a battle, a full
screen of text or menus, or the classic tile-aligned look of earlier pokevq frames. A scene fades
in and out through the palette register (to white or to black over a few frames); a battle opens
with the screen flashing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from pokevq.gameboy import Box
from pokevq.synth.battle import battle
from pokevq.synth.overworld import overworld
from pokevq.synth.ppu import FADE_TO_BLACK, FADE_TO_WHITE, INVERTED
from pokevq.synth.render import render_episode_indices
from pokevq.synth.screens import text_screen

Scene = Callable[[np.random.Generator, int, int], Iterator[tuple[np.ndarray, Box | None]]]


def _classic(rng: np.random.Generator, count: int, stride: int) -> Iterator[tuple[np.ndarray, Box | None]]:
    """The earlier look: whole tiles, the camera moving a tile at a time."""
    return render_episode_indices(rng, count)


# Scene kinds and how much of an episode each fills, roughly as in play.
SCENES: dict[str, tuple[Scene, float]] = {
    "overworld": (overworld, 0.45),
    "battle": (battle, 0.25),
    "text": (text_screen, 0.15),
    "classic": (_classic, 0.15),
}
STRIDES = (2, 3, 4, 5)


def _fade(shades: np.ndarray, palette: tuple[int, ...]) -> np.ndarray:
    return np.asarray(palette, dtype=np.uint8)[shades]


def render_gameplay_indices(rng: np.random.Generator, n_frames: int) -> Iterator[tuple[np.ndarray, Box | None, str]]:
    """Yield (shade-index frame (144, 160) uint8, text box or None, scene kind) for one episode."""
    stride = int(rng.choice(STRIDES))
    names = list(SCENES)
    weights = np.array([SCENES[name][1] for name in names])
    produced = 0
    while produced < n_frames:
        kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        length = min(int(rng.integers(24, 100)), n_frames - produced)
        fade = FADE_TO_BLACK if rng.random() < 0.5 else FADE_TO_WHITE
        steps = len(fade) if length >= 4 * len(fade) else 0
        for k, (shades, box) in enumerate(SCENES[kind][0](rng, length, stride)):
            if kind == "battle" and k < 4 and produced > 0:
                shades = _fade(shades, INVERTED) if k % 2 == 0 else shades  # the flash that starts a battle
            elif k < steps:
                shades = _fade(shades, fade[steps - 1 - k])  # fading in
            elif k >= length - steps:
                shades = _fade(shades, fade[k - (length - steps)])  # fading out
            yield shades, box, kind
        produced += length
