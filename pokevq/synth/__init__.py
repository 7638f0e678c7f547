"""Synthetic Game Boy frames, so the pipeline can be tried with no real data.

Read in this order: `tiles` (palettes, tile art, the font, the atlas) → `world` (a tile map per
episode) → `player` (sprites and the walk) → `dialog` (messages typed into the box) → `render`
(an episode's frames through the window) → `dataset` (the writer); `generate` is the public face.
"""
