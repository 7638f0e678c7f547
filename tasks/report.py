"""The final report: markdown and a reconstruction grid in storage, and the same as Prefect artifacts."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from pokevq.run.logs import CONSOLE
from pokevq.run.report import render_report
from pokevq.run.session import RunSession
from pokevq.train.preview import grid_png
from tasks.artifacts import artifact_key
from tasks.common import IO_TASK

RUNS_TABLE_KEY = "pokevq-runs"


def _browser_link(uri: str, endpoint_url: str | None, region: str) -> str:
    """Where a person can open an S3 object: the AWS console, or the endpoint's path-style URL."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if endpoint_url:
        return f"{endpoint_url.rstrip('/')}/{bucket}/{key}"
    return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?region={region}&prefix={key}"


def _metrics_row(record: dict[str, Any]) -> dict[str, Any]:
    """One epoch for the flow run's metrics table: validation figures, codebook ones from training without them."""
    val = record["val"] or {}
    shown = val or record["train"]
    return {
        "epoch": record["epoch"],
        "train_loss": record["train"].get("loss"),
        "val_loss": val.get("loss"),
        "val_psnr": val.get("psnr"),
        "val_ssim": val.get("ssim"),
        "pixel_accuracy": val.get("pixel_accuracy"),
        "dialog_accuracy": val.get("dialog_accuracy"),
        "token_stability": val.get("token_stability"),
        "dead_codes": shown.get("dead_codes"),
        "perplexity": shown.get("perplexity"),
        "codebook_usage": shown.get("codebook_usage"),
    }


def _show_in_ui(run: RunSession, markdown: str, history: list[dict[str, Any]], artifacts: dict[str, str]) -> None:
    """The report, the metrics and the outputs as keyed, described artifacts of the flow run."""
    experiment = str(run.config.run.experiment_name)
    create_markdown_artifact(markdown, key=artifact_key(experiment, "report"),
                             description=f"pokevq report of {experiment}: data, quality, timings, outputs")
    if history:
        rows = [_metrics_row(r) for r in history]
        create_table_artifact(rows, key=artifact_key(experiment, "metrics"),
                              description=f"Metrics of {experiment}, one row per epoch (a resumed run adds rows)")
        create_table_artifact([{"experiment": experiment, **rows[-1]}], key=RUNS_TABLE_KEY,
                              description="The last epoch of each pokevq/train run: follow it across runs "
                                          "in the artifact's history")
    if run.plan.backend != "s3":
        return
    if "reconstructions" in artifacts:
        url = run.storage.presigned_url(run.layout.reconstructions, expires_in=7 * 24 * 3600)
        create_image_artifact(url, key=artifact_key(experiment, "reconstructions"),
                              description=f"Validation frames of {experiment} (top) and their reconstructions "
                                          "(bottom); the link expires in 7 days")
    for name in ("report", "checkpoint_best", "checkpoint_latest", "tensorboard", "reconstructions"):
        if name in artifacts:
            create_link_artifact(_browser_link(artifacts[name], run.plan.endpoint_url, run.plan.region),
                                 link_text=f"{name}: {artifacts[name]}", description=f"{name} of {experiment}")


@task(
    name="report",
    task_run_name="report",
    **IO_TASK,
)
def write_report(
    run: RunSession,
    data: dict[str, Any],
    warm: dict[str, Any],
    checkpoints: list[dict[str, str]],
    last_epoch: int,
    stopped_by: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write reports/<experiment>/report.md and reconstructions.png, and show them on the flow run."""
    trainer = run.trainer_after(last_epoch)  # in a retried run, rebuilt from the last checkpoint
    layout, storage = run.layout, run.storage
    artifacts: dict[str, str] = {"manifest": storage.uri(layout.manifest)}
    if checkpoints:
        artifacts["checkpoint_latest"] = storage.uri(layout.checkpoint_latest)
        artifacts["checkpoint_best"] = storage.uri(layout.checkpoint_best)
    artifacts["tensorboard"] = storage.uri(layout.tensorboard)
    artifacts["training_log"] = storage.uri(layout.log_latest)
    artifacts["report"] = storage.uri(layout.report)

    preview = trainer.preview()
    if preview is not None:
        storage.put_bytes(layout.reconstructions, grid_png(*preview))
        artifacts["reconstructions"] = storage.uri(layout.reconstructions)

    history = trainer.history
    lookups = sum(r.get("cache_hit_rate", 0) for r in history)
    summary = {
        "experiment": run.config.run.experiment_name,
        "storage": run.plan.describe(),
        "fallback_reason": run.plan.fallback_reason,
        "data": data,
        "skipped": sorted(trainer.skipped.items()),
        "cache": {
            "directory": warm.get("directory", ""),
            "temporary": warm.get("temporary", False),
            "warm_hits": warm.get("hits", 0),
            "warm_misses": warm.get("misses", 0),
            "warm_mb": warm.get("bytes", 0) / 1e6,
            "warm_seconds": warm.get("seconds", 0.0),
            "training_hit_rate": lookups / len(history) if history else 0.0,
        },
        "epochs": history,
        "data_path": trainer.reader.describe(),
        "stopped_by": stopped_by,
        "best": trainer.best,
        "timings": run.timings,
        "artifacts": artifacts,
        "config": run.config.masked(),
    }
    markdown = render_report(summary)
    storage.put_bytes(layout.report, markdown.encode("utf-8"))

    _show_in_ui(run, markdown, history, artifacts)
    get_run_logger().info("Report written to %s", artifacts["report"], extra=CONSOLE)
    return {
        "report_uri": artifacts["report"],
        "artifacts": artifacts,
        "epochs_trained": len(history),
        "best": trainer.best,
        "skipped_frames": len(trainer.skipped),
        "fallback": bool(run.plan.fallback_reason),
        "final": history[-1] if history else None,
        "stopped_by": stopped_by,
    }
