"""The dataset writer: game*/episode*/frame_*.png and synth_index.json, deterministic per seed.

Layout written by `generate_dataset(out_dir, ...)`::

    out_dir/game{g}/episode{e}/frame_{n:03d}.png   # 1-based; RGB, 160 wide x 144 high
    out_dir/synth_index.json                        # one entry per frame, see below

`synth_index.json` is a JSON list with one object per frame, in writing order,
holding the `FrameInfo` fields::

    {"key": "game1/episode1/frame_001.png", "game": 1, "episode": 1, "frame": 1,
     "has_dialog": false, "dialog_box": null,          # or [top, left, bottom, right]
     "palette": [[224, 248, 208], ..., [8, 24, 32]],   # 4 RGB shades, lightest first
     "scene": "overworld"}                             # overworld, battle, text or classic

`dialog_box` is the frame's text (a dialog box, a menu, a screen of text) in pixels with
bottom and right exclusive, so `frame[top:bottom, left:right]` is the box. `load_index(out_dir)`
reads the file back as `FrameInfo`s.

Two styles: `gameplay` (the default) renders episodes the way the Game Boy's picture processor
draws real play (`pokevq.synth.episode`: scrolling, sprites at any pixel, fades, battles, text
screens); `classic` renders pokevq's earlier frames, every tile on the 8-pixel grid.

Everything is deterministic: each episode draws from its own
`numpy.random.default_rng([seed, game, episode])`, so the same arguments give
byte-identical PNGs and no global random state is touched.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pokevq.errors import ConfigError
from pokevq.gameboy import ANNOTATIONS_NAME, Box
from pokevq.synth.episode import render_gameplay_indices
from pokevq.synth.palettes import Palette, palette_for_game
from pokevq.synth.render import render_episode_indices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameInfo:
    """What the generator knows about one written frame (one entry of synth_index.json)."""

    key: str  # relative posix path, e.g. "game1/episode1/frame_001.png"
    game: int
    episode: int
    frame: int
    has_dialog: bool
    dialog_box: Box | None  # (top, left, bottom, right) in pixels, bottom/right exclusive
    palette: Palette  # 4 RGB shades, lightest first
    scene: str = "classic"  # which kind of scene the frame shows (pokevq.synth.episode.SCENES)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FrameInfo:
        box = data.get("dialog_box")
        return cls(
            key=str(data["key"]),
            game=int(data["game"]),
            episode=int(data["episode"]),
            frame=int(data["frame"]),
            has_dialog=bool(data["has_dialog"]),
            dialog_box=tuple(int(v) for v in box) if box is not None else None,  # type: ignore[arg-type]
            palette=tuple(tuple(int(c) for c in rgb) for rgb in data["palette"]),  # type: ignore[arg-type]
            scene=str(data.get("scene", "classic")),
        )


def frame_key(game: int, episode: int, frame: int) -> str:
    return f"game{game}/episode{episode}/frame_{frame:03d}.png"


def load_index(out_dir: str | Path) -> list[FrameInfo]:
    """Read `out_dir/synth_index.json` back (e.g. so metrics can find the dialog boxes)."""
    with open(Path(out_dir) / ANNOTATIONS_NAME, encoding="utf-8") as fh:
        return [FrameInfo.from_json(item) for item in json.load(fh)]


_KEY_PATTERN = re.compile(r"game\d+/episode\d+/frame_\d+\.png")


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete frames an earlier run listed in its index but this run did not write.

    Only files the previous index names are touched, so a smaller re-run into the
    same folder does not leave old frames that a loader would pick up.
    """
    try:
        previous = load_index(out_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return
    removed = 0
    for info in previous:
        if info.key in keep or not _KEY_PATTERN.fullmatch(info.key):
            continue
        path = out_dir / info.key
        if path.is_file():
            path.unlink()
            removed += 1
            for folder in (path.parent, path.parent.parent):
                try:
                    folder.rmdir()  # only succeeds once empty
                except OSError:
                    break
    if removed:
        log.info("removed %d frames left by an earlier synthetic run in %s", removed, out_dir)


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


STYLES = ("gameplay", "classic")


def _episode_frames(style: str, rng: np.random.Generator, frames: int) -> Iterator[tuple[np.ndarray, Box | None, str]]:
    """(shade indices, text box, scene) per frame of one episode in the chosen style."""
    if style == "classic":
        return ((shades, box, "classic") for shades, box in render_episode_indices(rng, frames))
    return render_gameplay_indices(rng, frames)


def generate_dataset(
    out_dir: str | Path, games: int = 2, episodes: int = 3, frames: int = 100, seed: int = 0,
    style: str = "gameplay",
) -> list[FrameInfo]:
    """Write `games` x `episodes` x `frames` synthetic frames plus synth_index.json under `out_dir`.

    Files go to `out_dir/game{g}/episode{e}/frame_{n:03d}.png` (all 1-based), and
    `out_dir/synth_index.json` lists the returned FrameInfos (see the module
    docstring). Game g uses `PALETTES[(g - 1) % len(PALETTES)]`; each episode
    has its own world. Same arguments give byte-identical files. Existing files
    are overwritten; frames named in a previous index and not rewritten are deleted.
    """
    _check_count("games", games, 1)
    _check_count("episodes", episodes, 1)
    _check_count("frames", frames, 1)
    _check_count("seed", seed, 0)
    if style not in STYLES:
        raise ConfigError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    root = Path(out_dir)
    infos: list[FrameInfo] = []
    for game in range(1, games + 1):
        palette = palette_for_game(game)
        colours = np.asarray(palette, dtype=np.uint8)
        for episode in range(1, episodes + 1):
            folder = root / f"game{game}" / f"episode{episode}"
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([int(seed), game, episode])
            for n, (shades, box, scene) in enumerate(_episode_frames(style, rng, frames), start=1):
                key = frame_key(game, episode, n)
                Image.fromarray(colours[shades], "RGB").save(root / key, format="PNG", optimize=False, compress_level=6)
                infos.append(FrameInfo(key, game, episode, n, box is not None, box, palette, scene))
    _remove_stale(root, {info.key for info in infos})
    index_path = root / ANNOTATIONS_NAME
    tmp_path = index_path.with_name(f".{ANNOTATIONS_NAME}.tmp")
    tmp_path.write_text(json.dumps([info.to_json() for info in infos], indent=1), encoding="utf-8")
    os.replace(tmp_path, index_path)
    dialog = sum(info.has_dialog for info in infos)
    log.info("wrote %d synthetic frames (%d with dialog) to %s", len(infos), dialog, root)
    return infos
