"""Real Game Boy Color frames for development: µCity 1.2 played headless in PyBoy by a seeded script.

    python -m benchmarks.ucity_frames --out DIR                    # the fixed split (benchmarks/ucity_split.json)
    python -m benchmarks.ucity_frames --rom PATH --out DIR --episodes 3 --frames 40 --seed 7   # any other set
    python -m benchmarks.ucity_frames --out tests/fixtures/ucity --episodes 3 --seed 9 --stride 15  # the CI sample

Frames go where `pokevq synth` puts its own, one game folder and one folder per episode:
`DIR/ucity/episode<e>/frame_<nnn>.png` (160x144 RGB, 1-based), so `pokevq train --frames-dir DIR` and
`python -m benchmarks.quality --data-dir DIR` read them as they are. `DIR/ucity_index.json` says which part
of the session each frame belongs to, what it shows (the scene: title, menu, city name, map generation, map,
pause menu, room, ...), the background's scroll (pixels), the tile rows the window layer covers
and the sprites' corners when it was taken (benchmarks/ucity_unseen.py reads it); it is not an annotations
file (µCity frames have no palette or dialog annotations: the metrics read palettes off the frames).

What an episode shows: benchmarks/ucity_episode.py; how frames are sampled: benchmarks/ucity_play.py.
The split file fixes the ROM (its sha256), the episodes and their input seeds, the frames per episode, the
sampling, which episodes validate, and the sha256 of every frame's pixels, so a regenerated split is
checked against the committed one.
Needs pyboy (the bench extra: `pip install -r requirements-bench.lock`), numpy and pillow; not torch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPLIT = HERE / "ucity_split.json"
GAME = "ucity"
INDEX_NAME = "ucity_index.json"
ROM_ENV = "POKEVQ_UCITY_ROM"


class Unavailable(Exception):
    """What is missing (the ROM, PyBoy), in one line that says what to do."""


def load_split(path: Path = SPLIT) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def default_rom(split: dict[str, Any]) -> Path:
    """$POKEVQ_UCITY_ROM, else the split's path relative to the repository (../shared/roms/ucity.gbc)."""
    return Path(os.environ.get(ROM_ENV) or ROOT / split["rom"]["path"])


def check_rom(path: Path, sha256: str | None) -> None:
    if not path.is_file():
        raise Unavailable(f"µCity ROM not found at {path}: put ucity.gbc (v1.2, github.com/AntonioND/ucity) there, "
                          f"or pass --rom PATH or set {ROM_ENV}")
    if sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        raise Unavailable(f"{path} is not µCity 1.2 (sha256 differs from the split's {sha256[:12]}…): "
                          "use the v1.2 release ROM")


def check_pyboy() -> None:
    try:
        import pyboy  # noqa: F401
    except ImportError:
        raise Unavailable("PyBoy is not installed: pip install -r requirements-bench.lock (the bench extra)") from None


def episode_key(episode: str, frame: int) -> str:
    return f"{GAME}/{episode}/frame_{frame:03d}.png"


def screen_facts(pyboy: Any) -> dict[str, Any]:
    """What the pixels do not say: the background's scroll, the tile rows the window (the status bar, menus)
    covers, and the on-screen sprites' top-left corners and height (the cursor, menu icons)."""
    lines = [tuple(int(v) for v in line) for line in pyboy.screen.tilemap_position_list]  # (SCX, SCY, WX, WY)
    shown = bool(pyboy.memory[0xFF40] & 0x20)  # LCDC bit 5: the window layer is on (as the frame ends)
    window = [shown and wx <= 166 and wy <= y for y, (_, _, wx, wy) in enumerate(lines)]
    background = [line[:2] for line, covered in zip(lines, window) if not covered] or [lines[0][:2]]
    scroll = max(set(background), key=background.count)
    rows = [r for r in range(len(lines) // 8) if all(window[8 * r:8 * r + 8])]
    sprites = [pyboy.get_sprite(i) for i in range(40)]
    return {"scroll": list(scroll), "window_rows": rows, "sprite_height": 16 if pyboy.memory[0xFF40] & 0x04 else 8,
            "sprites": [[s.x, s.y] for s in sprites if s.on_screen]}


def play(rom: Path, seed: int, frames: int, every: tuple[int, int]) -> list[tuple[Any, str, dict[str, Any]]]:
    """One episode: (RGB frame, part, facts: scene and what screen_facts reads) for each kept frame."""
    import numpy as np
    from pyboy import PyBoy

    from benchmarks.ucity_episode import play_episode
    from benchmarks.ucity_play import Recorder

    pyboy = PyBoy(str(rom), window="null", sound_emulated=False)
    kept: list[tuple[Any, str, dict[str, Any]]] = []

    def keep(frame: Any, part: str, scene: str) -> None:
        kept.append((frame, part, {"scene": scene, **screen_facts(pyboy)}))

    try:
        # The four scenario cities take turns by seed, so that consecutive seeds end in different cities.
        play_episode(Recorder(pyboy, np.random.default_rng(seed), keep, every=every), frames, scenario=seed % 4)
    finally:
        pyboy.stop(save=False)
    return kept


def write_frames(out: Path, episodes: dict[str, int], frames: int, every: tuple[int, int], rom: Path,
                 log: Any = print, stride: int = 1) -> dict[str, Any]:
    """Play and write every episode (only every `stride`-th frame, numbers kept, for small samples);
    returns the index written to DIR/ucity_index.json."""
    from PIL import Image

    index: list[dict[str, Any]] = []
    pixels = hashlib.sha256()
    for name, seed in episodes.items():
        started = time.perf_counter()
        folder = out / GAME / name
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("frame_*.png"):
            stale.unlink()
        for number, (frame, part, facts) in enumerate(play(rom, seed, frames, every), start=1):
            if (number - 1) % stride:
                continue
            key = episode_key(name, number)
            Image.fromarray(frame, "RGB").save(out / key, format="PNG", optimize=False, compress_level=6)
            pixels.update(frame.tobytes())
            index.append({"key": key, "episode": name, "frame": number, "part": part, **facts})
        log(f"{name} (seed {seed}): {len(range(0, frames, stride))} frames in {time.perf_counter() - started:.1f} s")
    result = {"frames": index, "pixels_sha256": pixels.hexdigest()}
    (out / INDEX_NAME).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def generate_split(out: Path, rom: Path | None = None, split_path: Path = SPLIT, log: Any = print) -> dict[str, Any]:
    """Write the split's frames under `out`; raises Unavailable (ROM, PyBoy) and checks the pixels' digest."""
    split = load_split(split_path)
    rom = rom or default_rom(split)
    check_rom(rom, split["rom"]["sha256"])
    check_pyboy()
    sampling = split["sampling"]
    result = write_frames(out, split["episodes"], split["frames_per_episode"], tuple(sampling["every_ticks"]), rom,
                          log)
    expected = split.get("pixels_sha256")
    result["matches_split"] = expected == result["pixels_sha256"]
    if expected and not result["matches_split"]:
        log(f"WARNING: the frames' pixels differ from the split's (sha256 {result['pixels_sha256'][:12]}… "
            f"instead of {expected[:12]}…): another PyBoy version? The split was made with pyboy "
            f"{split.get('pyboy', '?')}.")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="Folder to write DIR/ucity/episode<e>/frame_<nnn>.png into.")
    parser.add_argument("--rom", default=None, help=f"µCity 1.2 ROM (default: ${ROM_ENV}, else the split's path).")
    parser.add_argument("--split", default=str(SPLIT), help="Split file (default: benchmarks/ucity_split.json).")
    parser.add_argument("--episodes", type=int, default=None,
                        help="Play this many new episodes (seeded by --seed) instead of the split's.")
    parser.add_argument("--frames", type=int, default=None, help="Frames per episode (default: the split's).")
    parser.add_argument("--seed", type=int, default=0, help="With --episodes: episode e plays seed S*1000+e.")
    parser.add_argument("--stride", type=int, default=1,
                        help="Write only every K-th frame of each episode (a small sample, e.g. for tests).")
    args = parser.parse_args(argv)
    if min(args.episodes or 1, args.frames or 1, args.stride) < 1:
        parser.error("--episodes, --frames and --stride must be at least 1")

    out = Path(args.out)
    try:
        split = load_split(Path(args.split))
        rom = Path(args.rom) if args.rom else default_rom(split)
        if args.episodes is None and args.frames is None and args.stride == 1:
            result = generate_split(out, rom, Path(args.split))
            print(f"{len(result['frames'])} frames in {out / GAME}; pixels sha256 {result['pixels_sha256']}"
                  + (" (the split's)" if result["matches_split"] else ""))
            return 0 if result["matches_split"] or not split.get("pixels_sha256") else 1
        check_rom(rom, split["rom"]["sha256"])
        check_pyboy()
        episodes = split["episodes"] if args.episodes is None else \
            {f"episode{e}": args.seed * 1000 + e for e in range(1, args.episodes + 1)}
        result = write_frames(out, episodes, args.frames or split["frames_per_episode"],
                              tuple(split["sampling"]["every_ticks"]), rom, stride=args.stride)
        print(f"{len(result['frames'])} frames in {out / GAME}; pixels sha256 {result['pixels_sha256']}")
        return 0
    except Unavailable as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
