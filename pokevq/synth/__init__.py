"""Synthetic Game Boy frames, so the pipeline can be tried with no real data.

Frames are drawn the way the Game Boy's picture processor draws real play (`ppu`): a background
map seen through a scroll offset that moves a pixel or two per frame, a window layer with text
boxes and menus, sprites at any pixel position, palette fades and flashes. Episodes string scenes
together (`episode`): walking about a Pokémon Red-style overworld, battles with large creatures,
full screens of text and menus, and the classic look of pokevq's first frames (every tile on the
8-pixel grid). Every pixel is one of the game's 4 palette shades, so a reconstruction can be judged
by eye and snapped back to the palette.

The modules, in reading order:

- `palettes`: the four-shade palettes, one per game.
- `font`: the 5x7 text font, one 8x8 tile per character.
- `tiles`: tile art and the atlas that numbers every tile.
- `world`: an episode's tile map: roads, trees, houses, a pond, tall grass, flowers.
- `player`: the player's sprites and the walk the camera follows.
- `dialog`: messages wrapped and typed into the bottom box.
- `render`: the classic scene's frames, the world through the window a tile at a time.
- `ppu`: the picture processor: background with scroll, window, sprites, palette registers.
- `boxes`: text boxes, menus, HP bars and big title letters in colour indices.
- `creatures`: large battle creatures and small walking people from random shapes.
- `overworld`, `battle`, `screens`: the scenes of play, one frame every few 60 Hz frames.
- `episode`: scenes one after another, joined by fades and flashes.
- `dataset`: the writer, frames and synth_index.json.
- `generate`: the package's public names at their old address, `pokevq.synth.generate`.

The package is the public face: `from pokevq.synth import generate_dataset`.
"""

from pokevq.synth.dataset import FrameInfo, frame_key, generate_dataset, load_index
from pokevq.synth.dialog import DIALOG_BOX, DIALOG_TOP_ROW, random_message, wrap_text
from pokevq.synth.palettes import PALETTES, Palette, palette_for_game
from pokevq.synth.render import render_episode, render_episode_indices
from pokevq.synth.world import generate_world

__all__ = ["DIALOG_BOX", "DIALOG_TOP_ROW", "PALETTES", "FrameInfo", "Palette", "frame_key", "generate_dataset",
           "generate_world", "load_index", "palette_for_game", "random_message", "render_episode",
           "render_episode_indices", "wrap_text"]
