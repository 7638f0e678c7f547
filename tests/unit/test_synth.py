"""The synthetic frames: the layout, palettes and reproducibility of both styles, and the classic
style's tiled overworld (the gameplay style's picture processor is tested in test_synth_gameplay)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pokevq.errors import ConfigError
from pokevq.gameboy import ANNOTATIONS_NAME
from pokevq.synth.generate import PALETTES, FrameInfo, generate_dataset, load_index


def _load(root: Path, info: FrameInfo) -> np.ndarray:
    with Image.open(root / info.key) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def _shades(frame: np.ndarray, palette) -> np.ndarray:
    """Shade index of every pixel; -1 where the colour is not in the palette."""
    out = np.full(frame.shape[:2], -1, dtype=np.int8)
    for index, rgb in enumerate(palette):
        out[(frame == np.asarray(rgb, dtype=np.uint8)).all(axis=-1)] = index
    return out


def _episodes(infos: list[FrameInfo]) -> dict[tuple[int, int], list[FrameInfo]]:
    groups: dict[tuple[int, int], list[FrameInfo]] = {}
    for info in infos:
        groups.setdefault((info.game, info.episode), []).append(info)
    return groups


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, list[FrameInfo]]:
    root = tmp_path_factory.mktemp("small")
    return root, generate_dataset(root, games=2, episodes=2, frames=5)


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> tuple[Path, list[FrameInfo]]:
    """Enough classic frames per episode for walking, scrolling and dialog runs to show up."""
    root = tmp_path_factory.mktemp("walk")
    return root, generate_dataset(root, games=1, episodes=2, frames=60, seed=3, style="classic")


def test_layout_names_and_sizes(small):
    root, infos = small
    pngs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    expected = sorted(
        f"game{g}/episode{e}/frame_{n:03d}.png" for g in (1, 2) for e in (1, 2) for n in range(1, 6)
    )
    assert pngs == expected
    assert sorted(info.key for info in infos) == expected
    assert sorted(p.name for p in root.iterdir()) == ["game1", "game2", ANNOTATIONS_NAME]
    for info in infos:
        assert info.key == f"game{info.game}/episode{info.episode}/frame_{info.frame:03d}.png"
        with Image.open(root / info.key) as image:
            assert image.size == (160, 144)
            assert image.mode == "RGB"


def test_wide_frame_numbers_grow(tmp_path):
    infos = generate_dataset(tmp_path, games=1, episodes=1, frames=1000)
    assert infos[-1].key == "game1/episode1/frame_1000.png"
    assert (tmp_path / "game1/episode1/frame_1000.png").is_file()
    assert (tmp_path / "game1/episode1/frame_999.png").is_file()


def test_pixels_are_palette_shades(small):
    root, infos = small
    for info in infos:
        assert info.palette == PALETTES[(info.game - 1) % len(PALETTES)]
        shades = _shades(_load(root, info), info.palette)
        assert (shades >= 0).all(), f"{info.key} has colours outside its palette"
        assert len(np.unique(shades)) >= 3, f"{info.key} uses fewer than 3 shades"
    game_palettes = {info.game: info.palette for info in infos}
    assert game_palettes[1] != game_palettes[2]


def test_palettes_have_four_shades_lightest_first():
    assert len(PALETTES) >= 4
    assert len(set(PALETTES)) == len(PALETTES)
    for palette in PALETTES:
        assert len(palette) == 4 and len(set(palette)) == 4
        brightness = [sum(rgb) for rgb in palette]
        assert brightness == sorted(brightness, reverse=True)
    assert PALETTES[0] == ((224, 248, 208), (136, 192, 112), (52, 104, 86), (8, 24, 32))


def test_consecutive_frames_change_moderately(walk):
    root, infos = walk
    changed = []
    for frames in _episodes(infos).values():
        previous = None
        for info in frames:
            frame = _load(root, info)
            if previous is not None:
                changed.append((frame != previous).any(axis=-1).mean())
            previous = frame
    changed = np.array(changed)
    assert (changed > 0).mean() >= 0.8, "most frames should differ from the previous one"
    assert changed.mean() < 0.4, "the world should stay coherent between frames"
    assert np.median(changed) < 0.15, "usually only the player (or text) changes"


def test_frames_are_tiled_not_noise(walk):
    root, infos = walk
    for info in infos:
        frame = _load(root, info)
        tiles = frame.reshape(18, 8, 20, 8, 3).transpose(0, 2, 1, 3, 4).reshape(18 * 20, -1)
        _, inverse, counts = np.unique(tiles, axis=0, return_inverse=True, return_counts=True)
        repeated = (counts[inverse.ravel()] > 1).mean()
        assert repeated > 0.5, f"{info.key}: only {repeated:.0%} of its tiles repeat"


def test_dialog_boxes(walk):
    root, infos = walk
    dialog = [info for info in infos if info.has_dialog]
    assert dialog, "60 frames per episode should include a dialog run"
    assert len(dialog) < len(infos)
    for info in infos:
        assert (info.dialog_box is not None) == info.has_dialog
    for info in dialog:
        top, left, bottom, right = info.dialog_box
        assert 0 <= top < bottom <= 144 and 0 <= left < right <= 160
        assert bottom - top >= 32 and right - left >= 120
        box = _shades(_load(root, info), info.palette)[top:bottom, left:right]
        assert (box == 0).mean() > 0.6, "the box is filled with the lightest shade"
        # Double border in the darkest shade, one pixel inside each edge and again two further in.
        for line in (box[1, 1:-1], box[-2, 1:-1], box[1:-1, 1], box[1:-1, -2], box[3, 3:-3], box[3:-3, 3]):
            assert (line == 3).all()
        text = box[5:-5, 5:-5]
        assert set(np.unique(text)) <= {0, 3}
        assert (text == 3).sum() >= 20, f"{info.key}: no text in the dialog box"


def test_dialog_frames_are_a_minority(tmp_path):
    infos = generate_dataset(tmp_path, games=1, episodes=3, frames=100, seed=1, style="classic")
    share = np.mean([info.has_dialog for info in infos])
    assert 0.1 <= share <= 0.4


def test_index_matches_returned_list(walk):
    root, infos = walk
    assert load_index(root) == infos
    raw = json.loads((root / ANNOTATIONS_NAME).read_text())
    assert isinstance(raw, list) and len(raw) == len(infos)
    first_dialog = next(info for info in infos if info.has_dialog)
    entry = raw[infos.index(first_dialog)]
    assert entry["key"] == first_dialog.key
    assert entry["dialog_box"] == list(first_dialog.dialog_box)
    assert entry["palette"] == [list(rgb) for rgb in first_dialog.palette]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate_dataset(tmp_path / "a", games=2, episodes=1, frames=8, seed=7)
    generate_dataset(tmp_path / "b", games=2, episodes=1, frames=8, seed=7)
    generate_dataset(tmp_path / "c", games=2, episodes=1, frames=8, seed=8)
    a, b, c = (_snapshot(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    pngs = [key for key in a if key.endswith(".png")]
    assert sum(a[key] != c[key] for key in pngs) == len(pngs)


def test_rerun_with_fewer_frames_removes_old_ones(tmp_path):
    generate_dataset(tmp_path, games=1, episodes=2, frames=4)
    infos = generate_dataset(tmp_path, games=1, episodes=1, frames=2)
    pngs = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert pngs == sorted(info.key for info in infos)
    assert not (tmp_path / "game1/episode2").exists()


@pytest.mark.parametrize("kwargs", [{"games": 0}, {"episodes": -1}, {"frames": 0}, {"seed": -1}, {"frames": 2.5},
                                    {"style": "colour"}])
def test_bad_arguments_raise_config_error(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())
