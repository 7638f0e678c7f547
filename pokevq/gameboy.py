"""The Game Boy's screen and the facts about frames that the pixels do not carry, as every module sees them."""

from __future__ import annotations

SCREEN_W, SCREEN_H = 160, 144
TILE = 8  # the picture processor draws 8x8 tiles
Box = tuple[int, int, int, int]  # (top, left, bottom, right) in pixels, bottom/right exclusive
# Palettes and dialog boxes of generated frames, written beside them by `pokevq synth` (pokevq.data.annotations).
ANNOTATIONS_NAME = "synth_index.json"
