"""Tokenizer quality: every model variant trained on the same budget and data, one table, next to the
tile dictionaries a learned tokenizer must beat.

    python -m benchmarks.quality                 # CPU size: 5 epochs per variant, ~3-7 minutes each on 2 cores
    python -m benchmarks.quality --full          # the issue's budget, 50 epochs per variant (for a GPU)
    python -m benchmarks.quality --quick         # CI smoke: tiny data, seconds; checks it runs, not quality
    python -m benchmarks.quality --variants default --epochs 50 --time-budget 30m   # the 2-core budget
    python -m benchmarks.quality --data ucity --baselines-only   # real frames, the tile dictionaries alone (no model)
    python -m benchmarks.quality --data-dir DIR                  # any folder of frames in pokevq's layout

Frames (`--data`): synthetic Game Boy gameplay (`gameplay`, the default: `pokevq synth`, scrolling maps,
sprites, window text, fades, battles; `classic` for the old aligned-tile look), 2 games x 10 episodes x
200 frames at the CPU and full sizes, with their annotations (palettes, dialog and menu boxes); or real
Game Boy Color frames (`ucity`: µCity 1.2 played in PyBoy, benchmarks/ucity_split.json, generated into
the workdir by benchmarks/ucity_frames.py; needs the ROM and `pip install -r requirements-bench.lock`); or
any folder (`--data-dir DIR`, e.g. frames made by ucity_frames once). They are read from a local folder through the
library's own storage, cache and data path, and split by the trainer's own rule (10 % of episodes).

Each variant is a set of `TrainConfig` options trained by the library's own `Trainer` for the same number of
epochs, batch size and learning rate, from the same seed; the figures are the trainer's own validation metrics
(pokevq.train.metrics.QualityMetrics) after the last epoch, on the held-out episodes.

The same trainer scores the baselines on the same validation frames (pokevq.train.baselines): a
k-means dictionary of the training tiles at each variant's codebook size and at 512, and the exact
dictionary of every training tile (the bound of one code per tile from its own pixels).

The first variants add the quantizer techniques one at a time (a ladder from the original VQ-VAE
to the default); the later ones try issue 12's techniques: larger codebooks (EMA and FSQ), encoder
context, a warm-up and cosine schedule, a 10x learning rate, and one code per 4x4 patch. The
full-resolution conv architecture runs only with --full or --with-conv (~40x slower per frame on a
CPU). `--baselines-only` trains nothing: it scores the dictionaries alone and says how many validation
tiles never occur in training (benchmarks/dictionaries.py). Results go to benchmarks/QUALITY-<data>-<size>.md
(or --results), with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import HERE, machine_info

# Data and budget per size: (games, episodes, frames per episode, epochs per variant).
SIZES = {
    "quick": dict(games=1, episodes=3, frames=40, epochs=2, image_size="72x80"),
    "cpu": dict(games=2, episodes=10, frames=200, epochs=5, image_size="144x160"),
    "full": dict(games=2, episodes=10, frames=200, epochs=50, image_size="144x160"),
}

# The reach for the default configuration: metric -> (label, met?). Codes in use and the margins over
# the baselines (None) are judged in target_check.
TARGETS = {
    "psnr": ("PSNR ≥ 40 dB", lambda v: v >= 40.0),
    "pixel_accuracy": ("pixel accuracy ≥ 99.9 %", lambda v: v >= 0.999),
    "dialog_accuracy": ("dialog and menu accuracy ≥ 99.9 %", lambda v: v >= 0.999),
    "codes_in_use": ("codes in use ≥ half of min(codebook, distinct tiles)", None),
    "token_stability": ("token stability ≥ 99 %", lambda v: v >= 0.99),
    "above_kmeans": ("PSNR above k-means at the codebook size", None),
    "above_exact": ("PSNR above the exact training-tile dictionary", None),
    "above_kmeans_512": ("PSNR ≥ 10 dB above k-means 512", None),
}


@dataclass(frozen=True)
class Variant:
    name: str
    options: dict[str, Any]
    what: str
    slow_on_cpu: bool = False


VARIANTS = (
    Variant("vq", dict(quantizer="vq", codebook_init="random", dead_code_restart="off"),
            "the original VQ-VAE: codebook learned by gradient, random init, no restarts"),
    Variant("ema", dict(codebook_init="random", dead_code_restart="off"), "EMA codebook instead of a codebook loss"),
    Variant("ema+data", dict(codebook_init="data", dead_code_restart="off"), "+ codebook sampled from the first batch"),
    Variant("ema+kmeans", dict(codebook_init="kmeans", dead_code_restart="off"),
            "+ k-means on the first batch instead"),
    Variant("ema+kmeans+random", dict(dead_code_restart="random"), "+ dead codes restarted on random latents"),
    Variant("default", {}, "ema + k-means + dead codes restarted on the worst-represented latents"),
    Variant("default+lowdim", dict(code_dim=8), "+ codes looked up in 8 learned dimensions"),
    Variant("default+cosine", dict(code_dim=8, cosine_codes=True), "+ 8-dimensional codes on the unit sphere"),
    Variant("fsq", dict(quantizer="fsq"), "finite scalar quantization, 8x8x8 levels"),
    Variant("conv", dict(architecture="conv"), "the default quantizer on the full-resolution conv architecture",
            slow_on_cpu=True),
    # Issue 12's techniques, one at a time from the 512-code EMA model that was the default before it.
    Variant("ema-4096", dict(quantizer="ema", codebook_size=4096), "a larger codebook: 4,096 EMA codes"),
    Variant("fsq-4096", dict(quantizer="fsq", codebook_size=4096), "4,096 FSQ codes (8x8x8x8 levels)"),
    Variant("fsq-65536", dict(quantizer="fsq", codebook_size=65536), "65,536 FSQ codes (8x8x8x8x4x4 levels)"),
    Variant("fsq-65536+context", dict(quantizer="fsq", codebook_size=65536, encoder_kernel=3),
            "+ encoder context: 3x3 convolutions on the tile grid, a code sees 2 tiles each way"),
    Variant("fsq-65536+cosine", dict(quantizer="fsq", codebook_size=65536, lr_schedule="cosine", warmup_steps=500),
            "+ 500 warm-up steps and a cosine learning-rate schedule"),
    Variant("fsq-65536+lr1e-3", dict(quantizer="fsq", codebook_size=65536, learning_rate=1e-3),
            "+ a 10x learning rate (1e-3)"),
    Variant("default+lr1e-3", dict(learning_rate=1e-3), "the default at a 10x learning rate (1e-3)"),
    Variant("default+wide", dict(hidden_channels=256), "256 channels: the decoder's last layer can reach every "
            "direction of a tile's 192 values (128 cannot)"),
    Variant("default+wide+lr1e-3", dict(hidden_channels=256, learning_rate=1e-3), "+ a 10x learning rate (1e-3)"),
    Variant("downsample-4", dict(downsample=4), "one code per 4x4 patch (4 per tile): 4x the token budget"),
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
    from pokevq.data import FrameSource, warm_frames
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
    warm_frames(source, manifest, limit=len(manifest), progress=False, image_size=parse_image_size(size["image_size"]))
    return manifest, source, annotations, what


def train_variant(variant: Variant, size: dict[str, Any], data: tuple, workdir: Path, args: argparse.Namespace,
                  started: float) -> dict[str, Any]:
    from pokevq.config import TrainConfig
    from pokevq.train.trainer import Trainer

    manifest, source, annotations, _ = data
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
        **({"hidden_channels": 16, "embedding_dim": 8, "codebook_size": 64} if args.quick else {}),
    )
    config = TrainConfig(**{**options, **variant.options})  # a variant's options win over the run's
    # The baselines' exact dictionary holds every training tile: the bound, not the run report's sample.
    trainer = Trainer(config, manifest, source, workdir, annotations=annotations,
                      baseline_frames=int((manifest["split"] == "train").sum()))
    seconds = 0.0
    frames = 0
    try:
        for epoch in range(1, size["epochs"] + 1):
            result = trainer.train_epoch(epoch)
            seconds += result.seconds
            frames += result.train["frames"]
            val = result.val
            _log(started, f"{variant.name}: epoch {epoch}/{size['epochs']}: val PSNR {val.get('psnr', 0):.2f} dB, "
                           f"pixel accuracy {100 * val.get('pixel_accuracy', 0):.3f} %"
                           + (f" (time budget spent at step {trainer.global_step})" if result.partial else ""))
            if result.partial:
                break
    finally:
        trainer.close()
    return {
        "variant": variant.name,
        "what": variant.what,
        "options": variant.options,
        "codebook_size": config.codebook_size,
        "epochs": epoch - 1 + (0 if result.partial else 1),
        "steps": trainer.global_step,
        "minutes": seconds / 60,
        "frames_per_second": frames / max(seconds, 1e-9),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "val": result.val,
        "baselines": trainer.baselines or {},
    }


def baseline_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per tile dictionary the variants were measured against (k-means at each codebook size)."""
    rows: dict[str, dict[str, Any]] = {}
    for result in results:
        for name, figures in result.get("baselines", {}).items():
            rows.setdefault(name, {
                "variant": name, "what": BASELINE_WHAT["exact" if name.startswith("exact") else "k-means"],
                "options": {"codes": figures.get("codes")}, "codebook_size": figures.get("codes"), "epochs": 0,
                "steps": 0, "minutes": None, "frames_per_second": None, "parameters": 0, "val": figures,
            })
    return sorted(rows.values(), key=lambda r: (r["variant"].startswith("exact"), r["codebook_size"] or 0))


BASELINE_WHAT = {
    "k-means": "baseline: k-means centres of the training tiles, one code per 8×8 tile (built in seconds)",
    "exact": "bound: every distinct training tile a code; a validation tile gets its nearest training tile",
}


def _pct(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


COLUMNS = ("variant", "PSNR dB", "SSIM", "pixel acc", "exact frames", "dialog acc", "usage", "perplexity", "dead",
           "stability", "frames/s", "min")


def table_row(r: dict[str, Any]) -> list[str]:
    v = r["val"]
    return [
        r["variant"], _num(v.get("psnr")), _num(v.get("ssim"), 4), _pct(v.get("pixel_accuracy"), 3),
        _pct(v.get("exact_frames"), 1), _pct(v.get("dialog_accuracy"), 3), _pct(v.get("codebook_usage"), 1),
        _num(v.get("perplexity"), 1), _num(v.get("dead_codes")), _pct(v.get("token_stability"), 2),
        _num(r["frames_per_second"], 1), _num(r["minutes"], 1),
    ]


def markdown_table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" + "---:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(table_row(r)) + " |" for r in results]
    return lines


def console_table(results: list[dict[str, Any]]) -> str:
    rows = [list(COLUMNS)] + [table_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    )


def target_check(result: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the default variant against the issue's reach; met is None when the frames
    cannot say (no dialog boxes annotated, e.g. real frames)."""
    v = result["val"]
    codebook = result["codebook_size"]
    psnr = v.get("psnr", 0.0)
    kmeans = baselines.get(f"k-means {codebook}") or baselines.get("exact dictionary", {})  # k >= tiles: the same
    floors = {"above_kmeans": (kmeans, 0.0), "above_exact": (baselines.get("exact dictionary", {}), 0.0),
              "above_kmeans_512": (baselines.get("k-means 512", {}), 10.0)}
    checks = []
    for name, (label, ok) in TARGETS.items():
        if name == "codes_in_use":
            used = round(v.get("codebook_usage", 0) * codebook)
            need = min(codebook, v.get("data_tiles") or codebook) / 2
            checks.append((label, f"{used} (need {need:.0f})", used >= need))
        elif name in floors:
            floor, margin = floors[name]
            if "psnr" not in floor:
                checks.append((label, "no baseline", False))
                continue
            above = psnr - floor["psnr"]
            checks.append((label, f"{above:+.2f} dB", above >= margin if margin else above > 0))
        else:
            value = v.get(name)
            shown = _num(value) + " dB" if name == "psnr" else _pct(value, 3)
            if value is None and name == "dialog_accuracy":
                checks.append((label, "– (no boxes annotated)", None))
                continue
            checks.append((label, shown, value is not None and ok(value)))
    return checks


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else "met" if met else "MISSED"


def data_yardstick(result: dict[str, Any]) -> str:
    v = result["val"]
    tiles, perplexity, codebook = v.get("data_tiles"), v.get("data_tile_perplexity"), result["codebook_size"]
    if not tiles:
        return ""
    return (f"The validation frames hold {tiles} distinct tiles (perplexity of their frequencies "
            f"{perplexity:.1f}): a tokenizer that gives each distinct tile one code uses {tiles} of {codebook} "
            f"codes ({100 * tiles / codebook:.1f} %) at perplexity {perplexity:.1f}. Usage and perplexity above "
            "those figures mean the same tile gets different codes.")


def write_results(path: Path, results: list[dict[str, Any]], skipped: list[str], args: argparse.Namespace,
                  size: dict[str, Any], size_name: str, what: str) -> None:
    machine = machine_info()
    lines = ["# Tokenizer quality", "", f"Generated by `python -m benchmarks.quality{_argv()}`.", "",
             "## Machine", ""]
    lines += [f"- **{k}**: {v}" for k, v in machine.items()]
    lines += [
        "", "## Settings", "",
        f"- size: **{size_name}**"
        + (" (reduced: the issue's budget is `--full`, 50 epochs)" if size_name == "cpu" else ""),
        f"- data: {what}, {size['image_size']}, validation = 10 % of episodes",
        f"- budget per variant: {size['epochs']} epochs, batch {args.batch_size}, "
        f"AdamW lr {args.learning_rate}, seed 0",
        "", "## Results (validation episodes, after the last epoch)", "",
    ]
    floors = baseline_rows(results)
    lines += markdown_table(results + floors)
    lines += [""] + [f"- **{r['variant']}**: {r['what']} (`{json.dumps(r['options'])}`, {r['steps']} steps)"
                     for r in results]
    lines += [f"- **{r['variant']}**: {r['what']}" for r in floors]
    if skipped:
        lines += [f"- **{name}**: not run on this machine (slow on CPU; pass --with-conv)" for name in skipped]
    default = next((r for r in results if r["variant"] == "default"), None)
    if default is not None:
        lines += ["", "## The default against the issue's reach", "", "| target | measured | |", "|---|---:|---|"]
        lines += [f"| {label} | {shown} | {_verdict(met)} |"
                  for label, shown, met in target_check(default, default.get("baselines", {}))]
        yardstick = data_yardstick(default)
        if yardstick:
            lines += ["", yardstick]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def score_dictionaries(data: tuple, size: dict[str, Any], chosen: list[Variant], quick: bool) -> dict[str, Any]:
    """--baselines-only: the dictionaries at the chosen variants' codebook sizes and 512, and the coverage."""
    from benchmarks.dictionaries import baselines_only
    from pokevq.config import TrainConfig, parse_image_size
    from pokevq.train.baselines import SMALL_KMEANS

    manifest, source, annotations, _ = data
    default = 64 if quick else TrainConfig.__dataclass_fields__["codebook_size"].default
    codebooks = [v.options.get("codebook_size", default) for v in chosen] + [SMALL_KMEANS]
    return baselines_only(manifest, source, parse_image_size(size["image_size"]), codebooks, annotations)


def report_dictionaries(found: dict[str, Any], args: argparse.Namespace, size_name: str, label: str, what: str) -> int:
    """--baselines-only: one table of the dictionaries and the coverage line, to the console and a results file."""
    from benchmarks.dictionaries import coverage_line

    rows = baseline_rows([{"baselines": found["baselines"]}])
    path = Path(args.results) if args.results else HERE / f"QUALITY-{label}-dictionaries.md"
    lines = ["# Tile dictionaries", "", f"Generated by `python -m benchmarks.quality{_argv()}` (no model trained).",
             "", "## Machine", ""]
    lines += [f"- **{k}**: {v}" for k, v in machine_info().items()]
    lines += ["", "## Settings", "", f"- size: **{size_name}**",
              f"- data: {what}, validation = 10 % of episodes (the trainer's own split)",
              "- dictionaries built from every training frame, scored on every validation frame",
              "", "## Results (validation episodes)", ""]
    lines += markdown_table(rows) + [""] + [f"- **{r['variant']}**: {r['what']}" for r in rows]
    lines += ["", coverage_line(found["coverage"])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": size_name, "data": label, **found}, indent=1, default=str))
    print()
    print(f"Tile dictionaries ({label} frames, no model). Written to {path}.")
    print("  " + coverage_line(found["coverage"]))
    print(console_table(rows))
    return 0


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
    parser.add_argument("--results", default=None, help="Markdown results (default: benchmarks/QUALITY[-size].md).")
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
    data_kind = args.data or ("custom" if args.data_dir else "gameplay")
    label = args.data or (Path(args.data_dir).name if args.data_dir else "gameplay")

    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    dictionaries: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pokevq-quality-") as scratch:
        root = Path(args.workdir) if args.workdir else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        _log(started, f"size {size_name}: {label} frames, "
                      + ("tile dictionaries only" if args.baselines_only else f"{size['epochs']} epochs per variant")
                      + f", device {'cuda' if on_gpu else 'cpu'}")
        try:
            data = prepare_data(root, size, data_kind, args.data_dir, args.quick)
        except DataUnavailable as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 2
        _log(started, f"data ready: {len(data[0])} frames ({int((data[0]['split'] == 'val').sum())} validation)")
        if args.baselines_only:
            dictionaries = score_dictionaries(data, size, chosen, args.quick)
            _log(started, "tile dictionaries scored")
        for variant in [] if args.baselines_only else chosen:
            _log(started, f"{variant.name}: {variant.what}")
            results.append(train_variant(variant, size, data, root / "runs" / variant.name, args, started))

    if args.baselines_only:
        return report_dictionaries(dictionaries, args, size_name, label, data[3])
    results_path = Path(args.results) if args.results else HERE / f"QUALITY-{label}-{size_name}.md"
    write_results(results_path, results, skipped, args, size, size_name, data[3])
    if args.json:
        Path(args.json).write_text(json.dumps({"size": size_name, "data": label, "results": results,
                                               "baselines": baseline_rows(results), "skipped": skipped}, indent=1,
                                              default=str))
    print()
    print(f"Tokenizer quality ({size_name} size{', reduced' if size_name in ('cpu', 'custom') else ''}; "
          f"{size['epochs']} epochs per variant; validation episodes). Written to {results_path}.")
    default = next((r for r in results if r["variant"] == "default"), None)
    if default is not None:
        for label, shown, met in target_check(default, default.get("baselines", {})):
            print(f"  default: {label:<34} {shown:>22}  {_verdict(met)}")
        yardstick = data_yardstick(default)
        if yardstick:
            print("  " + yardstick)
    for name in skipped:
        print(f"  {name}: not run on CPU (about 40x slower per frame than tile); "
              "pass --with-conv or run --full on a GPU")
    print(console_table(results + baseline_rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
