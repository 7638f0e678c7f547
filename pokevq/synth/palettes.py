"""The four-shade palettes a game's frames are coloured with, lightest shade first."""

from __future__ import annotations

RGB = tuple[int, int, int]
Palette = tuple[RGB, RGB, RGB, RGB]

# Shade index 0 is the lightest, 3 the darkest; frames are drawn in shade indices and coloured last.
PALETTES: tuple[Palette, ...] = (
    ((224, 248, 208), (136, 192, 112), (52, 104, 86), (8, 24, 32)),  # DMG green
    ((232, 232, 232), (160, 160, 160), (88, 88, 88), (16, 16, 16)),  # Pocket grey
    ((248, 232, 208), (216, 144, 112), (144, 64, 56), (40, 16, 16)),  # sepia / red
    ((224, 240, 255), (136, 168, 232), (48, 80, 160), (8, 16, 48)),  # blue
)


def palette_for_game(game: int) -> Palette:
    """Game g (1-based) cycles through PALETTES so neighbouring games look different."""
    return PALETTES[(game - 1) % len(PALETTES)]
