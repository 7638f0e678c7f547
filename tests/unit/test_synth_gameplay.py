"""The gameplay style draws frames as the Game Boy does: scroll, window, sprites, palettes, scenes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pokevq.synth import generate_dataset
from pokevq.synth.dataset import FrameInfo
from pokevq.synth.ppu import FADE_TO_WHITE, INVERTED, MAX_SPRITES_PER_LINE, Screen, Sprite, render


def _checker() -> np.ndarray:
    """A 256x256 background of random colours, so any shift of the view shows."""
    return np.random.default_rng(0).integers(0, 4, size=(256, 256)).astype(np.uint8)


def test_scroll_moves_the_view_to_the_pixel_and_wraps():
    background = _checker()
    plain = render(Screen(background))
    scrolled = render(Screen(background, scx=3, scy=250))
    rows, cols = (np.arange(144) + 250) % 256, (np.arange(160) + 3) % 256
    assert np.array_equal(scrolled, background[np.ix_(rows, cols)])
    assert not np.array_equal(plain, scrolled)


def test_per_line_scroll_slides_part_of_the_screen():
    background = _checker()
    line_scx = np.zeros(144, dtype=np.int64)
    line_scx[:40] = 5
    frame = render(Screen(background, line_scx=line_scx))
    assert np.array_equal(frame[40:], render(Screen(background))[40:])
    assert np.array_equal(frame[:40], render(Screen(background, scx=5))[:40])


def test_window_covers_the_background_to_the_bottom_right():
    background = np.zeros((256, 256), dtype=np.uint8)
    window = np.full((48, 160), 3, dtype=np.uint8)
    frame = render(Screen(background, window=window, wy=96, wx=0))
    assert (frame[96:] == 3).all() and (frame[:96] == 0).all()


def test_sprites_colour_zero_transparent_flipped_at_any_pixel():
    pixels = np.zeros((8, 8), dtype=np.uint8)
    pixels[0, 0] = 2  # one opaque pixel in the top-left corner
    background = np.ones((256, 256), dtype=np.uint8)
    frame = render(Screen(background, sprites=[Sprite(13, 21, pixels)]))
    assert frame[13, 21] == 2 and (frame != 1).sum() == 1  # colour 0 shows the background
    flipped = render(Screen(background, sprites=[Sprite(13, 21, pixels, flip_x=True, flip_y=True)]))
    assert flipped[20, 28] == 2 and (flipped != 1).sum() == 1
    remapped = render(Screen(background, sprites=[Sprite(13, 21, pixels, palette=(0, 0, 3, 3))]))
    assert remapped[13, 21] == 3
    partly_off = render(Screen(background, sprites=[Sprite(-7, -7, np.full((16, 8), 3, np.uint8))]))
    assert (partly_off[:9, :1] == 3).all() and (partly_off[9:] == 1).all()


def test_at_most_ten_sprites_per_line_first_ones_win():
    solid = np.full((8, 8), 3, dtype=np.uint8)
    sprites = [Sprite(0, 12 * k, solid) for k in range(12)]
    frame = render(Screen(np.zeros((256, 256), np.uint8), sprites=sprites))
    drawn = [bool(frame[0, 12 * k]) for k in range(12)]
    assert drawn == [True] * MAX_SPRITES_PER_LINE + [False] * (12 - MAX_SPRITES_PER_LINE)


def test_palette_register_fades_and_inverts():
    background = _checker()
    faded = render(Screen(background, bgp=FADE_TO_WHITE[-1]))
    assert (faded == 0).all()
    inverted = render(Screen(background, bgp=INVERTED))
    assert np.array_equal(inverted, 3 - render(Screen(background)))


@pytest.fixture(scope="module")
def gameplay(tmp_path_factory) -> tuple[Path, list[FrameInfo]]:
    root = tmp_path_factory.mktemp("gameplay")
    return root, generate_dataset(root, games=1, episodes=4, frames=150, seed=5)


def _frame(root: Path, info: FrameInfo) -> np.ndarray:
    with Image.open(root / info.key) as image:
        return np.asarray(image)


def test_episodes_string_scenes_together(gameplay):
    _, infos = gameplay
    scenes = Counter(info.scene for info in infos)
    assert set(scenes) == {"overworld", "battle", "text", "classic"}


def _tiles(frame: np.ndarray) -> set[bytes]:
    return set(map(bytes, frame.reshape(18, 8, 20, 8, 3).transpose(0, 2, 1, 3, 4).reshape(360, -1)))


def test_scrolling_puts_tiles_off_the_grid(gameplay):
    """Far more distinct 8x8 grid cells than the classic style's whole atlas: the grid no longer lines up."""
    root, infos = gameplay
    overworld = [info for info in infos if info.scene == "overworld"]
    seen: set[bytes] = set()
    for info in overworld:
        seen |= _tiles(_frame(root, info))
    assert len(seen) > 500  # the classic atlas has 94 tiles in 2 phases
    # Consecutive frames of a walk differ by a shift that is not a whole tile.
    shifts = []
    for a, b in zip(overworld, overworld[1:]):
        if b.frame != a.frame + 1:
            continue
        fa, fb = _frame(root, a)[:96].astype(int), _frame(root, b)[:96].astype(int)
        # The shift that best explains the next frame (people walking about spoil a few pixels).
        best = min(((fa[8:88, 8:152] != fb[8 + dy : 88 + dy, 8 + dx : 152 + dx]).any(axis=-1).mean(), dy, dx)
                   for dy in range(-5, 6) for dx in range(-5, 6))
        if best[0] < 0.03 and (best[1], best[2]) != (0, 0):
            shifts.append((best[1], best[2]))
    assert shifts, "the camera never scrolled"
    assert any(dy % 8 or dx % 8 for dy, dx in shifts)


def test_text_boxes_are_annotated_with_text_inside(gameplay):
    root, infos = gameplay
    boxed = [info for info in infos if info.dialog_box is not None]
    assert {info.scene for info in boxed} >= {"battle", "text"}
    dark = []
    for info in boxed:
        top, left, bottom, right = info.dialog_box
        region = _frame(root, info)[top:bottom, left:right]
        dark.append((region == np.asarray(info.palette[3], np.uint8)).all(axis=-1).mean())
    assert np.median(dark) > 0.02, "text boxes hold dark glyphs and borders"


def test_fades_and_flashes_remap_the_shades(gameplay):
    root, infos = gameplay
    darkest = np.asarray(infos[0].palette[3], np.uint8)
    lightest = np.asarray(infos[0].palette[0], np.uint8)
    one_shade = 0
    for info in infos:
        frame = _frame(root, info)
        if (frame == darkest).all() or (frame == lightest).all():
            one_shade += 1
    assert one_shade >= 2, "scenes fade fully to white or black"


def test_gameplay_frames_are_reproducible(tmp_path):
    generate_dataset(tmp_path / "a", games=1, episodes=1, frames=40, seed=2)
    generate_dataset(tmp_path / "b", games=1, episodes=1, frames=40, seed=2)
    a = sorted((tmp_path / "a").rglob("*.png"))
    b = sorted((tmp_path / "b").rglob("*.png"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
