"""The run report: what a person reads the morning after a nightly run."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from pokevq.train.stop import describe_stop


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        return f"{value:.{digits}f}"
    return str(value)


def _percent(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.{digits}f} %"


def quality_section(record: dict[str, Any], config: dict[str, Any],
                    baselines: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The tokenizer's quality on the validation episodes after the last epoch, with the data's own yardstick."""
    val = record.get("val") or {}
    if "pixel_accuracy" not in val:
        return []
    codebook = int(config.get("codebook_size") or 0)
    tile = config.get("downsample", "d")
    used = round(val.get("codebook_usage", 0) * codebook) if codebook else None
    rows = [
        ("PSNR", f"{_fmt(val.get('psnr'), 2)} dB", "pixel MSE over the epoch, in dB"),
        ("SSIM", _fmt(val.get("ssim"), 4), "structural similarity, mean over frames"),
        ("pixel accuracy", _percent(val.get("pixel_accuracy"), 3),
         "pixels right once snapped to the game's shades"),
        ("exact frames", _percent(val.get("exact_frames"), 1), "frames with every pixel right"),
        ("dialog-box accuracy", _percent(val.get("dialog_accuracy"), 3),
         "pixel accuracy inside dialog boxes (frames with annotations)"),
        ("token stability", _percent(val.get("token_stability"), 2),
         f"unchanged {tile}×{tile} tiles of consecutive frames that keep their code"),
        ("codebook usage",
         f"{_percent(val.get('codebook_usage'), 1)}" + (f" ({used} of {codebook})" if used is not None else ""),
         "codes used at least once"),
        ("dead codes", _fmt(val.get("dead_codes")), "codes never used in the epoch"),
        ("perplexity", _fmt(val.get("perplexity"), 1), "effective number of codes used"),
        ("distinct tiles in the data", _fmt(val.get("data_tiles")),
         "the codes a one-code-per-tile tokenizer would use"),
        ("perplexity of the data's tiles", _fmt(val.get("data_tile_perplexity"), 1),
         "the perplexity such a tokenizer would show"),
    ]
    lines = ["", f"### Tokenizer quality (validation episodes, epoch {record.get('epoch')})", "",
             "| metric | value | meaning |", "|---|---:|---|"]
    lines += [f"| {name} | {value} | {meaning} |" for name, value, meaning in rows]
    return lines + baselines_section(record, baselines or {}, codebook, tile)


def baselines_section(record: dict[str, Any], baselines: dict[str, dict[str, Any]], codebook: int,
                      tile: Any) -> list[str]:
    """The model next to tile dictionaries scored on the same validation frames: the floors it must clear."""
    if not baselines:
        return []
    val = record.get("val_on_baseline_frames") or record.get("val") or {}
    rows = [(f"this model (epoch {record.get('epoch')})", codebook, val)]
    rows += [(name, figures.get("codes"), figures) for name, figures in baselines.items()]
    lines = ["", f"### Against tile dictionaries ({tile}×{tile} tiles, one code each, same validation frames)", "",
             "| tokenizer | codes | PSNR | pixel accuracy | dialog-box accuracy |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {_fmt(codes)} | {_fmt(v.get('psnr'), 2)} dB | {_percent(v.get('pixel_accuracy'), 3)} | "
              f"{_percent(v.get('dialog_accuracy'), 3)} |" for name, codes, v in rows]
    lines += ["", "k-means: the training tiles' k-means centres (a floor to clear); exact dictionary: every "
              "distinct training tile, each validation tile coded as its nearest (the bound of one code per tile "
              "from its own pixels). Built from a sample of training frames."]
    return lines


def render_report(summary: dict[str, Any]) -> str:
    """Markdown from the run summary the flow gathers (config, storage, data, epochs, timings, artifacts)."""
    lines = [f"# pokevq report: {summary['experiment']}", ""]
    status = summary.get("status", "completed")
    lines += [f"**Status:** {status}  ", f"**Storage:** {summary['storage']}  "]
    if summary.get("fallback_reason"):
        lines += [
            "",
            "> ⚠️ **S3 set-up failed; this run fell back to local storage.**",
            f"> Reason: {summary['fallback_reason']}",
        ]
    lines += _data_section(summary) + _training_section(summary)
    timings = summary.get("timings", {})
    if timings:
        lines += ["", "## Time per stage", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {stage} | {seconds:.2f} |" for stage, seconds in timings.items()]
    artifacts = summary.get("artifacts", {})
    if artifacts:
        lines += ["", "## Artifacts", ""]
        lines += [f"- {name}: `{uri}`" for name, uri in artifacts.items()]
    lines += ["", "## Configuration", "", "| option | value |", "|---|---|"]
    lines += [f"| `{name}` | `{value}` |" for name, value in summary.get("config", {}).items()]
    return "\n".join(lines) + "\n"


def _data_section(summary: dict[str, Any]) -> list[str]:
    """The frames indexed and skipped, and where they came from (the cache, the data path)."""
    data = summary.get("data", {})
    lines = [
        "", "## Data", "",
        f"- Frames indexed: {data.get('frames', 0)} in {data.get('episodes', 0)} episodes "
        f"of {data.get('games', 0)} games",
        f"- Split by episode: {data.get('train_frames', 0)} train frames ({data.get('train_episodes', 0)} episodes), "
        f"{data.get('val_frames', 0)} validation frames ({data.get('val_episodes', 0)} episodes)",
    ]
    skipped = summary.get("skipped", [])
    lines.append(f"- Skipped frames: {len(skipped)}")
    if skipped:
        reasons = Counter(reason.split(" (")[0] for _, reason in skipped)
        lines += [f"  - {count} × {reason}" for reason, count in reasons.most_common()]
        lines += ["", "| skipped frame | reason |", "|---|---|"]
        lines += [f"| `{key}` | {reason} |" for key, reason in skipped[:50]]
        if len(skipped) > 50:
            lines.append(f"| … | {len(skipped) - 50} more |")
    cache = summary.get("cache", {})
    return lines + [
        "",
        "## Cache",
        "",
        f"- Directory: `{cache.get('directory', '')}`{' (temporary)' if cache.get('temporary') else ''}",
        f"- Warm-up: {cache.get('warm_misses', 0)} downloaded, {cache.get('warm_hits', 0)} already cached, "
        f"{cache.get('warm_mb', 0):.1f} MB in {cache.get('warm_seconds', 0):.2f} s",
        f"- Hit rate during training: {100 * cache.get('training_hit_rate', 0.0):.1f} %",
        f"- Data path: {summary.get('data_path', '')}",
    ]


def _training_section(summary: dict[str, Any]) -> list[str]:
    """One row per epoch, the best one starred, what stopped training early, and the quality section."""
    epochs, best = summary.get("epochs", []), summary.get("best")
    lines = ["", "## Training", ""]
    budget = summary.get("stopped_by")
    if budget:
        lines += [f"> ⏱️ **{describe_stop(budget['budget'])} ended training** at step {budget['global_step']}, inside "
                  f"epoch {budget['epoch']}; its checkpoint records the position. Resume with "
                  f"`--resume {budget['checkpoint']}` to continue that epoch where it stopped.", ""]
    if not epochs:
        return lines + ["No epoch was trained in this run."]
    lines += [
        "| epoch | train loss | train PSNR (dB) | val loss | val PSNR (dB) | pixel accuracy | perplexity | "
        "codebook usage | frames/s | data stall | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in epochs:
        val = row.get("val") or {}
        train = row.get("train") or {}
        shown = val or train
        mark = " ★" if best and row["epoch"] == best.get("epoch") else ""
        lines.append(
            f"| {row['epoch']}{mark} | {_fmt(train.get('loss'), 5)} | {_fmt(train.get('psnr'), 2)} | "
            f"{_fmt(val.get('loss'), 5)} | {_fmt(val.get('psnr'), 2)} | {_percent(val.get('pixel_accuracy'), 2)} | "
            f"{_fmt(shown.get('perplexity'), 1)} | "
            f"{100 * shown.get('codebook_usage', 0):.1f} % | {_fmt(row.get('frames_per_second'), 1)} | "
            f"{_percent(row.get('data_stall'), 0)} | {_fmt(row.get('seconds'), 1)} |"
        )
    if best:
        lines += ["", f"Best epoch: **{best['epoch']}** (loss {_fmt(best['loss'], 5)}, ★)."]
    stalled = [row for row in epochs if (row.get("data_stall") or 0) > 0.2]
    if stalled:
        lines += ["", f"> ⚠️ Epochs {', '.join(str(r['epoch']) for r in stalled)} waited for data more than 20 % "
                      "of their time: pack the frames (`pokevq pack`), raise --num-workers, or give the cache "
                      "more room (--max-cache-size, --max-cache-bytes)."]
    baselines = next((r["baselines"] for r in reversed(epochs) if r.get("baselines")), None)
    return lines + quality_section(epochs[-1], summary.get("config", {}), baselines)
