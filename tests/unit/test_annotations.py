"""Frame annotations (palettes, dialog boxes) written by `pokevq synth` and read next to the frames."""

from __future__ import annotations

import json
import logging

import pytest

from pokevq.data.annotations import ANNOTATIONS_NAME, FrameAnnotation, load_annotations, parse_annotations
from pokevq.storage import LocalStorage
from pokevq.synth.generate import PALETTES, generate_dataset


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("annotated")
    infos = generate_dataset(out, games=2, episodes=1, frames=45, seed=0)
    return out, infos


def test_synth_annotations_give_each_frame_its_palette_and_dialog_box(frames):
    root, infos = frames
    found = load_annotations(LocalStorage(str(root)), "")
    assert set(found) == {info.key for info in infos}
    for info in infos:
        annotation = found[info.key]
        assert annotation.palette.tolist() == [list(c) for c in PALETTES[info.game - 1]]
        assert annotation.dialog_box == (tuple(info.dialog_box) if info.has_dialog else None)
    assert any(a.dialog_box for a in found.values()) and any(a.dialog_box is None for a in found.values())


def test_keys_carry_the_frames_prefix(frames):
    root, infos = frames
    found = parse_annotations((root / ANNOTATIONS_NAME).read_bytes(), "pokemon_frames/")
    assert f"pokemon_frames/{infos[0].key}" in found


def test_dialog_box_follows_the_resized_frame():
    annotation = FrameAnnotation(palette=None, dialog_box=(96, 0, 144, 160))
    assert annotation.box_at((144, 160)) == (96, 0, 144, 160)
    assert annotation.box_at((72, 80)) == (48, 0, 72, 80)


def test_frames_without_annotations_have_none(tmp_path):
    (tmp_path / "game1").mkdir()
    assert load_annotations(LocalStorage(str(tmp_path)), "") == {}


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"{not json", "Expecting property name"),
        (json.dumps({"key": "x"}).encode(), "expected a JSON list"),
        (json.dumps([{"key": "a.png", "palette": [[1, 2]]}]).encode(), "palette must be 1-64 RGB colours"),
        (json.dumps([{"key": "a.png", "palette": [[1, 2, 300]]}]).encode(), "0-255"),
        (json.dumps([{"key": "a.png", "has_dialog": True, "dialog_box": [0, 0, 999, 160]}]).encode(), "not inside"),
        (b"\xff\xfe\x00garbage", "Ignoring frame annotations"),
    ],
)
def test_unusable_annotations_are_a_warning_not_a_failure(tmp_path, caplog, content, reason):
    (tmp_path / ANNOTATIONS_NAME).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="pokevq.data.annotations"):
        assert load_annotations(LocalStorage(str(tmp_path)), "") == {}
    message = caplog.text
    assert "Ignoring frame annotations" in message and reason in message
    assert "read palettes off the frames" in message
    assert "Traceback" not in message
