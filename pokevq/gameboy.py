"""The Game Boy's screen and the facts about frames that the pixels do not carry, as every module sees them."""

from __future__ import annotations

SCREEN_W, SCREEN_H = 160, 144
TILE = 8  # the picture processor draws 8x8 tiles
# Colours one frame can show: a Game Boy 4 shades, a Game Boy Color 56 (8 background palettes of 4 colours and
# 8 sprite palettes of 3, colour 0 being transparent); 64 leaves room for a palette changed mid-frame.
MAX_COLOURS = 64
Box = tuple[int, int, int, int]  # (top, left, bottom, right) in pixels, bottom/right exclusive
# Palettes and dialog boxes of generated frames, written beside them by `pokevq synth` (pokevq.data.annotations).
ANNOTATIONS_NAME = "synth_index.json"
