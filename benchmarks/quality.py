"""Tokenizer quality: every model variant trained on the same budget and data, in one rate-distortion table
next to the tile dictionaries a learned tokenizer must beat (issue 23).

    python -m benchmarks.quality --variants default,tile-512 --epochs 3   # the new default and the previous one
    python -m benchmarks.quality                 # CPU size: every variant, 5 epochs each, minutes each on 2 cores
    python -m benchmarks.quality --full          # 50 epochs per variant (for a GPU)
    python -m benchmarks.quality --quick         # CI smoke: tiny data and models, seconds; checks it runs, not quality
    python -m benchmarks.quality --variants default --epochs 50 --time-budget 30m   # the 2-core budget
    python -m benchmarks.quality --data ucity --data-dir DIR     # real frames (the µCity split made once into DIR)
    python -m benchmarks.quality --data ucity --baselines-only   # the tile dictionaries alone (no model)

Frames (`--data`): synthetic Game Boy gameplay (`gameplay`, the default: `pokevq synth`, scrolling maps,
sprites, window text, fades, battles; `classic` for the old aligned-tile look), 2 games x 10 episodes x
200 frames at the CPU and full sizes, with their annotations (palettes, dialog and menu boxes); or real
Game Boy Color frames (`ucity`: µCity 1.2 played in PyBoy, benchmarks/ucity_split.json, generated into
the workdir by benchmarks/ucity_frames.py; needs the ROM and `pip install -r requirements-bench.lock`); or
any folder (`--data-dir DIR`, e.g. frames made by ucity_frames once). They are read from a local folder through the
library's own storage, cache and data path, and split by the trainer's own rule (10 % of episodes).

Each variant is a set of `TrainConfig` options trained by the library's own `Trainer` for the same number of
epochs, batch size and learning rate, from the same seed. The default is the `patch` model (65,536 codes
that are the training frames' 8x8 patches, pokevq.model.patches); `tile-512` is the previous default, and
every other variant changes the previous default, as it did when it was written.

One row per tokenizer, all scored by benchmarks/dictionaries.py on every validation frame in episode order
with the trainer's metrics (pokevq.train.metrics.QualityMetrics): each trained variant (encode, then decode),
k-means of the training tiles at each variant's codebook size (when smaller than the distinct training tiles)
and at 512, and the exact dictionary of every training tile (pokevq.train.baselines), built from every
training frame. Columns: tokens per frame, bits per token (log2 of the codebook size, or of the exact
dictionary's tile count) and per frame; PSNR, palette-snapped pixel accuracy, dialog accuracy; pixel accuracy
on the positions whose 8x8 patch never occurs in training; the distinct codes validation gets, also as a share
of min(codebook size, distinct validation patches); seconds to build or to train (seeding included), and
encode speed (encode alone, 16 frames a batch, every row on the same batches in turn). Under the table, the
default against the issue's targets. The full-resolution conv architecture runs only with --full or
--with-conv (~40x slower per frame on a CPU). Results go to benchmarks/QUALITY-<data>-<size>.md (or
--results), with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import HERE, machine_info

# Data and budget per size: (games, episodes, frames per episode, epochs per variant).
SIZES = {
    "quick": dict(games=1, episodes=3, frames=40, epochs=2, image_size="72x80"),
    "cpu": dict(games=2, episodes=10, frames=200, epochs=5, image_size="144x160"),
    "full": dict(games=2, episodes=10, frames=200, epochs=50, image_size="144x160"),
}
# --quick shrinks every model; a variant's own options still win (a variant about its codebook size keeps it).
QUICK_MODEL = {"hidden_channels": 16, "embedding_dim": 8, "codebook_size": 64}

# The default before issue 23: the variants written against it change it, not the patch model.
PREVIOUS_DEFAULT: dict[str, Any] = {"architecture": "tile", "codebook_size": 512}


@dataclass(frozen=True)
class Variant:
    name: str
    options: dict[str, Any]  # what the variant changes in `base`
    what: str
    slow_on_cpu: bool = False
    base: dict[str, Any] = field(default_factory=dict)  # the model it changes: the default ({}) or PREVIOUS_DEFAULT

    @property
    def settings(self) -> dict[str, Any]:
        """Every option the variant sets."""
        return {**self.base, **self.options}


OLD = PREVIOUS_DEFAULT
VARIANTS = (
    Variant("vq", dict(quantizer="vq", codebook_init="random", dead_code_restart="off"),
            "the original VQ-VAE: codebook learned by gradient, random init, no restarts", base=OLD),
    Variant("ema", dict(codebook_init="random", dead_code_restart="off"), "EMA codebook instead of a codebook loss",
            base=OLD),
    Variant("ema+data", dict(codebook_init="data", dead_code_restart="off"), "+ codebook sampled from the first batch",
            base=OLD),
    Variant("ema+kmeans", dict(codebook_init="kmeans", dead_code_restart="off"),
            "+ k-means on the first batch instead", base=OLD),
    Variant("ema+kmeans+random", dict(dead_code_restart="random"), "+ dead codes restarted on random latents",
            base=OLD),
    Variant("tile-512", {}, "the previous default: tile architecture, 512 EMA codes, k-means init, dead codes "
            "restarted on the worst-represented latents", base=OLD),
    # The "default+..." variants change the previous default (tile-512), as they did when they were written.
    Variant("default+lowdim", dict(code_dim=8), "tile-512 + codes looked up in 8 learned dimensions", base=OLD),
    Variant("default+cosine", dict(code_dim=8, cosine_codes=True), "tile-512 + 8-dimensional codes on the unit sphere",
            base=OLD),
    Variant("fsq", dict(quantizer="fsq"), "finite scalar quantization, 8x8x8 levels (tile architecture)", base=OLD),
    Variant("conv", dict(architecture="conv"), "tile-512's quantizer on the full-resolution conv architecture",
            slow_on_cpu=True, base=OLD),
    # Issue 12's techniques, one at a time from the 512-code EMA tile model that was the default before it.
    Variant("ema-4096", dict(quantizer="ema", codebook_size=4096), "a larger codebook: 4,096 EMA codes", base=OLD),
    Variant("fsq-4096", dict(quantizer="fsq", codebook_size=4096), "4,096 FSQ codes (8x8x8x8 levels)", base=OLD),
    Variant("fsq-65536", dict(quantizer="fsq", codebook_size=65536), "65,536 FSQ codes (8x8x8x8x4x4 levels)",
            base=OLD),
    Variant("fsq-65536+context", dict(quantizer="fsq", codebook_size=65536, encoder_kernel=3),
            "+ encoder context: 3x3 convolutions on the tile grid, a code sees 2 tiles each way", base=OLD),
    Variant("fsq-65536+cosine", dict(quantizer="fsq", codebook_size=65536, lr_schedule="cosine", warmup_steps=500),
            "+ 500 warm-up steps and a cosine learning-rate schedule", base=OLD),
    Variant("fsq-65536+lr1e-3", dict(quantizer="fsq", codebook_size=65536, learning_rate=1e-3),
            "+ a 10x learning rate (1e-3)", base=OLD),
    Variant("default+lr1e-3", dict(learning_rate=1e-3), "tile-512 at a 10x learning rate (1e-3)", base=OLD),
    Variant("default+wide", dict(hidden_channels=256), "tile-512 with 256 channels: the decoder's last layer can "
            "reach every direction of a tile's 192 values (128 cannot)", base=OLD),
    Variant("default+wide+lr1e-3", dict(hidden_channels=256, learning_rate=1e-3), "+ a 10x learning rate (1e-3)",
            base=OLD),
    Variant("downsample-4", dict(downsample=4), "tile-512 with one code per 4x4 patch (4 per tile): 4x the tokens",
            base=OLD),
    # Issue 23: codes that are pixel patches of the training frames.
    Variant("default", {}, "the patch model (the default): codes are the training frames' 8×8 patches, on the grid "
            "first, then sprites put over backgrounds they were not seen on and the most frequent windows at "
            "the other 63 offsets; a seen patch is looked up exactly, another by a nearest-patch search; the "
            "decoder corrects from the neighbouring codes what the codebook cannot hold"),
    Variant("patch-16384", dict(codebook_size=16384), "the patch model with 16,384 codes (14 bits per token)"),
)


def _log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)


DATA = ("gameplay", "classic", "ucity")
QUICK_UCITY = dict(episodes=3, frames=40)  # --quick --data ucity: the split's first episodes, shortened


class DataUnavailable(Exception):
    """Frames the benchmark cannot have here (no ROM, no PyBoy, no folder): one line says what to do."""


def write_frames(root: Path, size: dict[str, Any], data: str, quick: bool) -> tuple[Path, str]:
    """Frames for `data` under `root`; returns their folder and what they are, in words."""
    frames = root / "frames"
    if data == "ucity":
        return frames, _ucity_frames(frames, quick)
    from pokevq.synth.generate import generate_dataset

    generate_dataset(frames, games=size["games"], episodes=size["episodes"], frames=size["frames"], seed=0, style=data)
    return frames, (f"synthetic {data} frames (`pokevq synth --style {data}`), {size['games']} games × "
                    f"{size['episodes']} episodes × {size['frames']} frames")


def _ucity_frames(frames: Path, quick: bool) -> str:
    from benchmarks import ucity_frames

    split = ucity_frames.load_split()
    try:
        if not quick:
            ucity_frames.generate_split(frames, log=lambda line: None)
            return _ucity_split_what(split)
        rom = ucity_frames.default_rom(split)
        ucity_frames.check_rom(rom, split["rom"]["sha256"])
        ucity_frames.check_pyboy()
        episodes = dict(list(split["episodes"].items())[:QUICK_UCITY["episodes"]])
        ucity_frames.write_frames(frames, episodes, QUICK_UCITY["frames"], tuple(split["sampling"]["every_ticks"]),
                                  rom, log=lambda line: None)
        return f"µCity 1.2 frames, the split's first {len(episodes)} episodes × {QUICK_UCITY['frames']} frames"
    except ucity_frames.Unavailable as exc:
        raise DataUnavailable(str(exc)) from None


def _ucity_split_what(split: dict[str, Any]) -> str:
    return (f"µCity 1.2 frames (`python -m benchmarks.ucity_frames`, benchmarks/ucity_split.json): "
            f"{len(split['episodes'])} episodes × {split['frames_per_episode']} frames, validating on "
            f"{' and '.join(split['validation'])}")


def check_ucity_validation(manifest: Any) -> None:
    """The trainer's validation episodes must be the split's (benchmarks/ucity_split.json)."""
    from benchmarks.ucity_frames import load_split

    val = manifest[manifest["split"] == "val"]
    # DIR/ucity/episode13/... lists as game "ucity", episode "episode13"; DIR/ucity/ itself as game "episode13".
    found = sorted({episode or game for game, episode in zip(val["game"].astype(str), val["episode"].astype(str))})
    wanted = sorted(load_split()["validation"])
    if found != wanted:
        raise DataUnavailable(f"the trainer validates on {', '.join(found)}, but benchmarks/ucity_split.json on "
                              f"{', '.join(wanted)}: these are not the split's frames")


def prepare_data(root: Path, size: dict[str, Any], data: str, data_dir: str | None,
                 quick: bool) -> tuple[Any, Any, dict, str]:
    """Write (or find) the frames, index them, and warm a cache that holds all of them decoded."""
    from pokevq.config import parse_image_size
    from pokevq.data import BucketReader, FrameSource, warm_units
    from pokevq.data.annotations import load_annotations
    from pokevq.data.cache import FrameCache
    from pokevq.data.manifest import index_frames
    from pokevq.storage import LocalStorage

    if data_dir:
        frames, what = Path(data_dir), f"the frames in `{data_dir}`"
        if data == "ucity" and not quick:
            from benchmarks.ucity_frames import load_split

            what = f"{_ucity_split_what(load_split())}, read from `{data_dir}`"
        if not frames.is_dir():
            raise DataUnavailable(f"--data-dir {data_dir} is not a folder: point it at frames laid out as "
                                  "DIR/<game>/<episode>/frame_<n>.png")
    else:
        frames, what = write_frames(root, size, data, quick)
    storage = LocalStorage(str(frames))
    manifest = index_frames(storage, "", val_fraction=0.1, seed=0)
    if data == "ucity" and not (quick and not data_dir):
        check_ucity_validation(manifest)
    annotations = load_annotations(storage, "")
    cache = FrameCache(root / "cache", max_items=len(manifest) + 1)
    source = FrameSource(storage, cache)
    path = BucketReader.decide(manifest, source, max_bytes=None)
    warm_units(path, manifest, source, parse_image_size(size["image_size"]), progress=False)
    return manifest, source, annotations, what


def variant_config(variant: Variant, size: dict[str, Any], args: argparse.Namespace) -> Any:
    from pokevq.config import TrainConfig

    options = dict(
        experiment_name=f"quality-{variant.name}".replace("+", "-"),
        num_epochs=size["epochs"],
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        image_size=size["image_size"],
        num_workers=0,
        device=args.device,
        seed=0,
        time_budget=args.time_budget,
    )
    # The run's options, the model it changes, --quick's small model, then the variant's own changes.
    return TrainConfig(**{**options, **variant.base, **(QUICK_MODEL if args.quick else {}), **variant.options})


@dataclass(frozen=True)
class ModelTokenizer:
    """A trained model behind the interface benchmarks.dictionaries scores (that of a TileDictionary)."""

    name: str
    model: Any

    @property
    def size(self) -> int:
        return int(self.model.config.codebook_size)

    @property
    def tile(self) -> int:
        return int(self.model.config.downsample)

    def encode(self, frames: Any) -> Any:
        return self.model.encode(frames)

    def decode(self, codes: Any) -> Any:
        return self.model.decode_codes(codes)


def train_variant(variant: Variant, size: dict[str, Any], data: tuple, workdir: Path, args: argparse.Namespace,
                  started: float) -> tuple[dict[str, Any], ModelTokenizer]:
    """Train one variant; returns its row (without the validation figures) and the trained model, as a
    checkpoint loads it: nothing remembered from training or validation."""
    from pokevq.model.vqvae import VQVAE
    from pokevq.train.trainer import Trainer

    manifest, source, annotations, _ = data
    config = variant_config(variant, size, args)
    clock = time.perf_counter()
    # The benchmark builds and scores the tile dictionaries itself (every training frame, every validation frame).
    trainer = Trainer(config, manifest, source, workdir, annotations=annotations, baseline_frames=0)
    setup = time.perf_counter() - clock  # a patch codebook is seeded here
    try:
        for epoch in range(1, size["epochs"] + 1):
            result = trainer.train_epoch(epoch)
            val = result.val
            _log(started, f"{variant.name}: epoch {epoch}/{size['epochs']}: val PSNR {val.get('psnr', 0):.2f} dB, "
                           f"pixel accuracy {100 * val.get('pixel_accuracy', 0):.3f} %"
                           + (f" (time budget spent at step {trainer.global_step})" if result.partial else ""))
            if result.partial:
                break
    finally:
        trainer.close()
    seconds = time.perf_counter() - clock
    model = VQVAE(trainer.model_config).to(trainer.device)
    model.load_state_dict(trainer.model.state_dict())
    model.eval()
    row = {
        "variant": variant.name,
        "what": variant.what,
        "options": variant.settings,
        "codebook_size": config.codebook_size,
        "epochs": epoch - 1 + (0 if result.partial else 1),
        "steps": trainer.global_step,
        "seconds": seconds,
        "setup_seconds": setup,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainer_val": result.val,
    }
    return row, ModelTokenizer(variant.name, model)


BASELINE_WHAT = {
    "k-means": "k-means centres of the training tiles, one code per 8×8 tile",
    "exact": "every distinct training tile a code (bits per token: log2 of the tile count); a validation tile "
             "gets its nearest training tile",
}


def score_rows(models: list[ModelTokenizer], results: list[dict[str, Any]], data: tuple, size: dict[str, Any],
               codebooks: list[int], device: Any, started: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build the dictionaries, score every tokenizer on the validation frames; fills the models' rows and returns
    the dictionaries' rows and the coverage."""
    from benchmarks.dictionaries import coverage, fit, score
    from pokevq.config import parse_image_size
    from pokevq.train.baselines import SMALL_KMEANS

    manifest, source, annotations, _ = data
    image_hw = parse_image_size(size["image_size"])
    dictionaries, seconds, seen = fit(manifest, source, image_hw, [*codebooks, SMALL_KMEANS])
    _log(started, "tile dictionaries built: " + ", ".join(f"{d.name} ({d.size} tiles, {seconds[d.name]:.1f} s)"
                                                        for d in dictionaries))
    figures, val_tiles = score([*models, *dictionaries], manifest, source, image_hw, annotations, seen, device)
    _log(started, "every tokenizer scored on the validation frames")
    for row, model in zip(results, models):
        row.update(val=figures[model.name], **rate(model.size, image_hw, model.tile))
    floors = [{"variant": d.name, "what": BASELINE_WHAT["exact" if d.name.startswith("exact") else "k-means"],
               "codebook_size": d.size, "seconds": seconds[d.name], "val": figures[d.name],
               **rate(d.size, image_hw, d.tile)} for d in dictionaries]
    return floors, coverage(seen, val_tiles)


def rate(codes: int, image_hw: tuple[int, int], tile: int) -> dict[str, Any]:
    tokens = (image_hw[0] // tile) * (image_hw[1] // tile)
    bits = math.log2(codes)
    return {"tokens_per_frame": tokens, "bits_per_token": bits, "bits_per_frame": tokens * bits}


def _pct(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _bits(value: float) -> str:
    return f"{value:.0f}" if value == round(value) else f"{value:.2f}"


def used_share(row: dict[str, Any]) -> float | None:
    """Distinct codes validation gets, of min(codebook size, distinct validation patches)."""
    v = row["val"]
    room = min(row["codebook_size"], v.get("data_tiles") or row["codebook_size"])
    return v["codes_used"] / room if room else None


COLUMNS = ("tokenizer", "tokens/frame", "bits/token", "bits/frame", "PSNR dB", "pixel acc", "dialog acc",
           "unseen acc", "codes used", "used %", "build/train s", "encode fr/s")


def table_row(r: dict[str, Any]) -> list[str]:
    v = r["val"]
    return [
        r["variant"], str(r["tokens_per_frame"]), _bits(r["bits_per_token"]), f"{r['bits_per_frame']:.0f}",
        _num(v.get("psnr")), _pct(v.get("pixel_accuracy"), 3), _pct(v.get("dialog_accuracy"), 3),
        _pct(v.get("unseen_pixel_accuracy"), 2), str(v["codes_used"]), _pct(used_share(r), 1),
        _num(float(r["seconds"]), 1), _num(float(v["encode_frames_per_second"]), 1),
    ]


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" + "---:|" * (len(COLUMNS) - 1)]
    return lines + ["| " + " | ".join(table_row(r)) + " |" for r in rows]


def console_table(rows: list[dict[str, Any]]) -> str:
    cells = [list(COLUMNS)] + [table_row(r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in cells
    )


def _judge(value: float | None, goal: float | None, op: str, gap: Any) -> str:
    """met, n/a, or MISSED by the gap (formatted by `gap`) for value `op` goal."""
    if value is None or goal is None:
        return "n/a"
    met = {"=": value == goal, "≤": value <= goal, "≥": value >= goal, ">": value > goal}[op]
    return "met" if met else "MISSED (equal)" if value == goal else f"MISSED by {gap(abs(goal - value))}"


def target_check(default: dict[str, Any], rows: list[dict[str, Any]], data: str,
                 image_hw: tuple[int, int]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for the default against issue 23's targets; the dictionaries and tile-512
    are the rows of the same run."""
    by_name = {r["variant"]: r for r in rows}
    v = default["val"]
    exact = by_name.get("exact dictionary", {}).get("val", {})
    tile = by_name.get("tile-512")

    def db(x: float) -> str:
        return f"{x:.2f} dB"

    def pp(x: float) -> str:  # percentage points; a gap too small for 3 decimals still shows
        return f"{100 * x:.3f} points" if 100 * x >= 5e-4 else f"{100 * x:.1e} points"

    def acc(x: float) -> str:
        return _pct(x, 4)

    def fps(x: float) -> str:
        return f"{x:.1f} frames/s"

    tokens = (image_hw[0] // 8) * (image_hw[1] // 8)
    checks = [
        (f"tokens per frame = {tokens} (one per 8×8 tile)", default["tokens_per_frame"], tokens, "=", str, str),
        ("bits per token ≤ 16", default["bits_per_token"], 16.0, "≤", _bits, _bits),
        ("PSNR ≥ exact dictionary + 1 dB", v.get("psnr"), exact["psnr"] + 1 if "psnr" in exact else None, "≥", db, db),
        ("pixel accuracy above the exact dictionary's", v.get("pixel_accuracy"), exact.get("pixel_accuracy"), ">",
         acc, pp),
        ("unseen-position pixel accuracy above the exact dictionary's", v.get("unseen_pixel_accuracy"),
         exact.get("unseen_pixel_accuracy"), ">", acc, pp),
    ]
    if data == "ucity":
        checks.append(("pixel accuracy ≥ 99.5 % (µCity)", v.get("pixel_accuracy"), 0.995, "≥", acc, pp))
    checks.append(("codes used ≥ 50 % of min(codebook size, distinct validation patches)", used_share(default), 0.5,
                   "≥", lambda x: _pct(x, 1), pp))
    tile_fps = tile["val"]["encode_frames_per_second"] if tile else None
    checks.append(("encode speed ≥ 0.5× tile-512's (same run)", v["encode_frames_per_second"],
                   0.5 * tile_fps if tile_fps else None, "≥", fps, fps))
    if data == "classic":
        checks.append(("PSNR no more than 0.5 dB below tile-512's (classic)", v.get("psnr"),
                       tile["val"]["psnr"] - 0.5 if tile else None, "≥", db, db))
    found = []
    for label, value, goal, op, show, gap in checks:
        measured = "–" if value is None else show(value)
        if goal is not None and op != "=":
            measured += f" (goal {show(goal)})"
        found.append((label, measured, _judge(value, goal, op, gap)))
    return found


def write_results(path: Path, results: list[dict[str, Any]], floors: list[dict[str, Any]], cover: dict[str, Any],
                  skipped: list[str], args: argparse.Namespace, size: dict[str, Any], size_name: str, what: str,
                  data: str, frames: tuple[int, int]) -> list[tuple[str, str, str]]:
    """The results file; returns the default's target checks (none without a default row)."""
    from benchmarks.dictionaries import BATCH, coverage_line
    from pokevq.config import parse_image_size

    image_hw = parse_image_size(size["image_size"])
    trained = f"{_epochs(size['epochs'])}, batch {args.batch_size}, AdamW lr {args.learning_rate}, seed 0"
    lines = ["# Tokenizer quality" if results else "# Tile dictionaries", "",
             f"Generated by `python -m benchmarks.quality{_argv()}`" + ("." if results else " (no model trained)."),
             "", "## Machine", ""]
    lines += [f"- **{k}**: {v}" for k, v in machine_info().items()]
    lines += [
        "", "## Settings", "",
        f"- size: **{size_name}**"
        + (" (reduced: the issue's budget is `--full`, 50 epochs)" if size_name in ("cpu", "custom") else ""),
        f"- data: {what}, {size['image_size']}, validation = 10 % of episodes (the trainer's own split)",
        f"- budget per variant: {trained}" if results else "- no model trained (--baselines-only)",
        f"- every row scored on the same {frames[1]} validation frames (all of them, in episode order); dictionaries "
        f"built from all {frames[0]} training frames",
        f"- build/train s: dictionaries from reading the training frames on; models from the Trainer's construction "
        f"(a patch codebook is seeded there) to the end of the last epoch, validation passes included; encode fr/s: "
        f"`encode` alone, {BATCH} validation frames a batch, every row in turn on the same batches",
        "", "## Rate and distortion (validation episodes, after the last epoch)", "",
    ]
    lines += markdown_table(results + floors) + [""]
    lines += [f"- **{r['variant']}**: {r['what']} (`{json.dumps(r['options'])}`, {r['steps']} steps)" for r in results]
    lines += [f"- **{r['variant']}**: {r['what']}" for r in floors]
    lines += [f"- **{name}**: not run on this machine (slow on CPU; pass --with-conv)" for name in skipped]
    lines += ["", coverage_line(cover) + " *unseen acc* is the pixel accuracy on those positions."]
    default = next((r for r in results if r["variant"] == "default"), None)
    checks = target_check(default, results + floors, data, image_hw) if default is not None else []
    if checks:
        lines += ["", "## The default against the issue's targets", "", "| target | measured | |", "|---|---:|---|"]
        lines += [f"| {label} | {measured} | {verdict} |" for label, measured, verdict in checks]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return checks


def _epochs(count: int) -> str:
    return f"{count} epoch{'' if count == 1 else 's'}"


def _argv() -> str:
    return (" " + " ".join(sys.argv[1:])) if len(sys.argv) > 1 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size_group = parser.add_mutually_exclusive_group()
    size_group.add_argument("--quick", action="store_true", help="CI smoke size (seconds).")
    size_group.add_argument("--full", action="store_true", help="The issue's size and budget (for a GPU).")
    parser.add_argument("--variants", default=None,
                        help="Comma-separated variant names (default: all; with --baselines-only: default).")
    parser.add_argument("--epochs", type=int, default=None, help="Epochs per variant (default: the size's).")
    parser.add_argument("--time-budget", default=None,
                        help="Also end each variant's training after this long (e.g. 30m), at a step boundary.")
    parser.add_argument("--with-conv", action="store_true", help="Also run the conv architecture on a CPU.")
    parser.add_argument("--data", "--style", dest="data", default=None, choices=DATA,
                        help="Frames: gameplay (synthetic, the picture processor's; the default), classic (synthetic, "
                             "the old look) or ucity (real Game Boy Color frames; needs the ROM and PyBoy). "
                             "--style is its old name.")
    parser.add_argument("--data-dir", default=None,
                        help="Use the frames in this folder (DIR/<game>/<episode>/frame_<n>.png) instead of writing "
                             "them; with --data ucity, the split's frames made by benchmarks.ucity_frames.")
    parser.add_argument("--baselines-only", action="store_true",
                        help="Train nothing: score the tile dictionaries (k-means at each variant's codebook size "
                             "and at 512, the exact dictionary) and count the validation tiles training never shows.")
    parser.add_argument("--batch-size", type=int, default=16, help="Batch size (default: 16, the guide's).")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="Learning rate (default: 1e-4, the guide's).")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto).")
    parser.add_argument("--results", default=None,
                        help="Markdown results (default: benchmarks/QUALITY-<data>-<size>.md).")
    parser.add_argument("--json", default=None, help="Also write the results as JSON here.")
    parser.add_argument("--workdir", default=None, help="Keep frames, cache and runs here (default: a temp dir).")
    args = parser.parse_args(argv)

    import torch

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    size_name = "quick" if args.quick else "full" if args.full else "cpu"
    size = dict(SIZES[size_name])
    if args.epochs is not None:
        size["epochs"] = args.epochs
        # Named by what it is: the CPU data at the full budget is the full size, fewer epochs are not.
        size_name = next((name for name, known in SIZES.items() if known == size), "custom")
    known = {v.name: v for v in VARIANTS}
    if args.variants:
        unknown = [name for name in args.variants.split(",") if name not in known]
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        chosen = [known[name] for name in args.variants.split(",")]
    elif args.baselines_only:
        chosen = [known["default"]]
    else:
        chosen = list(VARIANTS)
    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    skipped = [v.name for v in chosen if v.slow_on_cpu and not (on_gpu or args.full or args.with_conv or args.quick)]
    chosen = [v for v in chosen if v.name not in skipped]
    codebooks = [variant_config(v, size, args).codebook_size for v in chosen]
    data_kind = args.data or ("custom" if args.data_dir else "gameplay")
    label = args.data or (Path(args.data_dir).name if args.data_dir else "gameplay")

    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    models: list[ModelTokenizer] = []
    with tempfile.TemporaryDirectory(prefix="pokevq-quality-") as scratch:
        root = Path(args.workdir) if args.workdir else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        _log(started, f"size {size_name}: {label} frames, "
                      + ("tile dictionaries only" if args.baselines_only else _epochs(size["epochs"]) + " per variant")
                      + f", device {'cuda' if on_gpu else 'cpu'}")
        try:
            data = prepare_data(root, size, data_kind, args.data_dir, args.quick)
        except DataUnavailable as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 2
        manifest = data[0]
        frames = (int((manifest["split"] == "train").sum()), int((manifest["split"] == "val").sum()))
        _log(started, f"data ready: {len(manifest)} frames ({frames[1]} validation)")
        for variant in [] if args.baselines_only else chosen:
            _log(started, f"{variant.name}: {variant.what}")
            row, model = train_variant(variant, size, data, root / "runs" / variant.name, args, started)
            results.append(row)
            models.append(model)
        device = "cuda" if on_gpu else "cpu"
        floors, cover = score_rows(models, results, data, size, codebooks, device, started)

    default_name = "dictionaries" if args.baselines_only else size_name
    results_path = Path(args.results) if args.results else HERE / f"QUALITY-{label}-{default_name}.md"
    checks = write_results(results_path, results, floors, cover, skipped, args, size, size_name, data[3],
                           data_kind, frames)
    if args.json:
        Path(args.json).write_text(json.dumps({"size": size_name, "data": label, "results": results,
                                               "baselines": floors, "coverage": cover, "skipped": skipped,
                                               "targets": checks}, indent=1, default=str))
    from benchmarks.dictionaries import coverage_line

    print()
    print(f"Tokenizer quality ({size_name} size{', reduced' if size_name in ('cpu', 'custom') else ''}; "
          + ("no model trained" if args.baselines_only else _epochs(size["epochs"]) + " per variant")
          + f"; validation episodes). Written to {results_path}.")
    for label_, measured, verdict in checks:
        print(f"  default: {label_:<68} {measured:>34}  {verdict}")
    print("  " + coverage_line(cover))
    for name in skipped:
        print(f"  {name}: not run on CPU (about 40x slower per frame than tile); "
              "pass --with-conv or run --full on a GPU")
    print(console_table(results + floors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
