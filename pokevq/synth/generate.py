"""Synthetic Game Boy overworld frames, so the pipeline can be tried with no real data.

The frames imitate a Pokémon Red-style overworld: an 8x8-tile world (grass, tall
grass, paths, water, trees, houses, fences, flowers) seen through a 160x144
window that follows a walking player, with the classic bottom dialog box in
some runs of frames. Every pixel is one of the game's 4 palette shades, so a
reconstruction can be judged by eye and snapped back to the palette by metrics.

Layout written by `generate_dataset(out_dir, ...)`::

    out_dir/game{g}/episode{e}/frame_{n:03d}.png   # 1-based; RGB, 160 wide x 144 high
    out_dir/synth_index.json                        # one entry per frame, see below

`synth_index.json` is a JSON list with one object per frame, in writing order,
holding the `FrameInfo` fields::

    {"key": "game1/episode1/frame_001.png", "game": 1, "episode": 1, "frame": 1,
     "has_dialog": false, "dialog_box": null,          # or [top, left, bottom, right]
     "palette": [[224, 248, 208], ..., [8, 24, 32]]}   # 4 RGB shades, lightest first

`dialog_box` is in pixels with bottom and right exclusive, so
`frame[top:bottom, left:right]` is the box. `load_index(out_dir)` reads the file
back as `FrameInfo`s.

Everything is deterministic: each episode draws from its own
`numpy.random.default_rng([seed, game, episode])`, so the same arguments give
byte-identical PNGs and no global random state is touched.

The package reads top to bottom: `tiles` (palettes, tile art, font, atlas), `world`,
`player` (the walk), `dialog`, `render` (an episode's frames), then `dataset` (the writer).
This module is its public face.
"""

from pokevq.synth.dataset import FrameInfo, frame_key, generate_dataset, load_index
from pokevq.synth.dialog import DIALOG_BOX, DIALOG_TOP_ROW, random_message, wrap_text
from pokevq.synth.render import render_episode, render_episode_indices
from pokevq.synth.tiles import PALETTES, Palette, palette_for_game
from pokevq.synth.world import generate_world

__all__ = ["DIALOG_BOX", "DIALOG_TOP_ROW", "PALETTES", "FrameInfo", "Palette", "frame_key", "generate_dataset",
           "generate_world", "load_index", "palette_for_game", "random_message", "render_episode",
           "render_episode_indices", "wrap_text"]
