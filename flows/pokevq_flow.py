"""The `pokevq` flow: validate → index the manifest → warm the cache → epochs with uploads → report.

Its parameters are the `TrainConfig` fields, flat and typed (`flows/parameters.py` makes them
from the config), so the CLI, a deployment run form and Python all configure the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, wait

from flows.parameters import config_parameters
from flows.runtime import experiment_name_for_run, load_bucket_block, temporary_server_patience
from flows.tokenize_flow import pokevq_tokenize
from pokevq import settings
from pokevq.config import TrainConfig
from pokevq.errors import RunStoppedError
from pokevq.run.logs import CONSOLE
from pokevq.run.nightly import is_first_of_day
from pokevq.run.session import RunSession
from pokevq.run.validate import StoragePlan
from pokevq.train.stop import SIGTERM, describe_stop
from tasks.artifacts import advance_progress, progress_artifact
from tasks.common import retry_options, run_id
from tasks.report import write_report
from tasks.setup import (
    acquire_lease,
    index_manifest,
    name_nightly,
    pack_new_frames,
    validate,
    warm_cache,
)
from tasks.training import prepare_training, train_epoch
from tasks.uploads import (
    checkpoint_published,
    upload_checkpoint,
    upload_logs,
    upload_tensorboard,
)


@flow(name="pokevq", description="Train a VQ-VAE on Game Boy frames stored in S3.")
@config_parameters(TrainConfig)
def pokevq(**options: Any) -> dict[str, Any]:
    """Train a VQ-VAE tokenizer on Game Boy frames; every parameter is a `TrainConfig` field."""
    parameters = dict(options)  # the fields given; TrainConfig supplies every default
    settings.check_run_knobs()  # a bad POKEVQ_* value stops the run before anything starts
    block = load_bucket_block()  # deployments: bucket and keys from the S3Bucket block
    if block is not None:
        block.fill(parameters)
    if not parameters.get("experiment_name") and not parameters.get("resume"):
        # The same on a retry of this run.
        parameters["experiment_name"] = experiment_name_for_run(bool(parameters.get("nightly")))
    config = TrainConfig.from_dict(parameters)  # validates, resolves env: the one conversion
    credentials = block.credentials if block is not None else None
    logger = get_run_logger()
    # The retry policy as $POKEVQ_TASK_RETRY_DELAYS says when this run starts (a deployment's env applies).
    retrying = retry_options()
    validate_, acquire_lease_, index_manifest_, pack_new_frames_, warm_cache_, write_report_ = (
        step.with_options(**retrying)
        for step in (validate, acquire_lease, index_manifest, pack_new_frames, warm_cache, write_report)
    )
    upload_checkpoint_, upload_tensorboard_, upload_logs_ = (
        step.with_options(**retrying) for step in (upload_checkpoint, upload_tensorboard, upload_logs)
    )

    plan = validate_(config, credentials)
    if config.run.nightly and not config.run.resume and is_first_of_day(config.run.experiment_name):
        # The day's second nightly takes nightly-YYYYMMDD-2 (a retry of this run keeps the name it chose).
        config = config.replace(experiment_name=name_nightly.with_options(**retrying)(config, plan, credentials))
    pending: list[PrefectFuture] = []
    with RunSession(config, StoragePlan.from_dict(plan, credentials), run_id()) as run:
        try:
            acquire_lease_(run)  # refuses to start while another run trains this experiment
            manifest = index_manifest_(run, plan)
            packed = pack_new_frames_(run, manifest) if config.run.nightly else None  # the day's new frames
            warm = warm_cache_(run, manifest, wait_for=[packed] if packed is not None else None)
            start = prepare_training(run, manifest, warm)
            logger.info("Training %s from epoch %d to %d on %s", config.run.experiment_name, start["start_epoch"],
                        config.schedule.num_epochs, start["device"], extra=CONSOLE)
            epochs = _train_epochs(run, config, start, pending, upload_checkpoint_, upload_tensorboard_, upload_logs_)
            _raise_first_failure(pending)
            published = [future.result() for future in epochs.checkpoint_uploads]
            stopped_by = epochs.stopped_by
            if stopped_by is not None:
                stopped_by["checkpoint"] = published[-1]["latest"]
            data = {**manifest, "packed": packed} if packed is not None else manifest
            summary = write_report_(run, data, warm, published, epochs.completed, stopped_by)
            upload_logs_(run, "final", summary)
        finally:
            wait(pending)  # never abandon an upload that already started, even when training failed
    if stopped_by is not None and stopped_by["budget"] == SIGTERM:  # the lease is released by now
        raise RunStoppedError(
            f"Stopped by SIGTERM at step {stopped_by['global_step']} inside epoch {stopped_by['epoch']}, with a "
            f"checkpoint: retry this flow run, or run again with --resume {stopped_by['checkpoint']}, to continue there"
        )
    if config.run.tokenizes_after and summary.get("artifacts", {}).get("checkpoint_best"):
        summary["tokens"] = _tokenize_after(config, plan, summary["artifacts"]["checkpoint_best"])
    return summary


def _tokenize_after(config: TrainConfig, plan: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    """The nightly's last step: its best checkpoint's tokens of every episode, as a pokevq-tokenize subflow.

    A new checkpoint writes a new token set (named by its SHA-256): never mixed into an older one.
    """
    s3 = plan["backend"] == "s3"
    return pokevq_tokenize(
        checkpoint=checkpoint, use_s3=s3, s3_bucket=plan.get("bucket") if s3 else None,
        s3_region=plan.get("region") if s3 else None, s3_endpoint_url=plan.get("endpoint_url") if s3 else None,
        frames_dir=config.storage.frames_dir, output_dir=config.storage.output_dir,
        local_cache_dir=config.storage.local_cache_dir, max_cache_bytes=config.storage.max_cache_bytes,
        device="cpu" if config.distributed.device == "cpu" else "auto", debug=config.run.debug,
    )


@dataclass
class _Epochs:
    """What the epoch loop leaves for the report."""

    completed: int
    stopped_by: dict[str, Any] | None = None
    checkpoint_uploads: list[PrefectFuture] = field(default_factory=list)


def _train_epochs(
    run: RunSession, config: TrainConfig, start: dict[str, Any], pending: list[PrefectFuture],
    upload_checkpoint_: Any, upload_tensorboard_: Any, upload_logs_: Any,
) -> _Epochs:
    """train_epoch[N] one after another; each epoch's uploads overlap the next epoch."""
    logger = get_run_logger()
    first, last, experiment = start["start_epoch"], config.schedule.num_epochs, str(config.run.experiment_name)
    progress = progress_artifact(experiment, first - 1, last)
    epochs = _Epochs(completed=first - 1)
    checkpoint_upload = tensorboard_upload = log_upload = None
    unchecked: list[PrefectFuture] = []
    older: list[PrefectFuture] = []  # the uploads of the epoch before the last one
    newest: list[PrefectFuture] = []  # the last epoch's uploads
    previous: dict[str, Any] = start
    for epoch in range(first, last + 1):
        # Only the last epoch's uploads overlap training: one that fails for good stops the run before
        # the epoch after next at the latest, and the work directory holds at most two epochs' files.
        wait(older)
        failed = _failed_upload(unchecked)
        if failed is not None:  # e.g. S3 down for longer than every retry: stop, a retry continues from here
            logger.error("Stopping before epoch %d, an upload failed (%s): retry the run once storage is back",
                         epoch, failed.state.message)
            break
        result = train_epoch(run, epoch, wait_for=[previous])  # after prepare_training, or the epoch before
        if not Path(result["checkpoint_path"]).is_file() and not checkpoint_published(run, epoch, result):
            # A retry on another machine: this epoch is cached, but its checkpoint never reached storage
            # and its work file is gone. Train it again from the last checkpoint that did.
            logger.warning("Epoch %d's checkpoint was never uploaded and is gone: training it again", epoch)
            result = train_epoch.with_options(refresh_cache=True)(run, epoch, wait_for=[previous])
        advance_progress(progress, experiment, epoch, last)
        # Each upload chain stays in order so `latest` never goes back.
        checkpoint_upload = upload_checkpoint_.submit(run, epoch, result, wait_for=_after(checkpoint_upload))
        tensorboard_upload = upload_tensorboard_.submit(run, epoch, result, wait_for=_after(tensorboard_upload))
        log_upload = upload_logs_.submit(run, epoch, result, wait_for=_after(log_upload))
        epochs.checkpoint_uploads.append(checkpoint_upload)
        uploads = [checkpoint_upload, tensorboard_upload, log_upload]
        pending += uploads
        unchecked += uploads
        older, newest = newest, uploads
        previous = result
        if result.get("partial"):  # --max-steps, --time-budget or SIGTERM: the run ends at a step boundary
            epochs.stopped_by = {"budget": result["stopped_by"], "epoch": epoch, "global_step": result["global_step"]}
            logger.warning("%s ended training at step %d inside epoch %d; the checkpoint records the position, so a "
                           "resume continues this epoch", describe_stop(result["stopped_by"]),
                           result["global_step"], epoch)
            break
        epochs.completed = epoch
    return epochs


def _after(future: PrefectFuture | None) -> list[PrefectFuture]:
    return [future] if future is not None else []


def _failed_upload(unchecked: list[PrefectFuture]) -> PrefectFuture | None:
    """The first finished upload that failed for good (after its retries); finished good ones are dropped."""
    for future in list(unchecked):
        wrapped = getattr(future, "wrapped_future", None)
        if wrapped is None or not wrapped.done():
            continue
        if future.state.is_failed():
            return future
        unchecked.remove(future)
    return None


def _raise_first_failure(futures: list[PrefectFuture]) -> None:
    """Wait for every upload; raise the first failure so the run fails with its message."""
    wait(futures)
    for future in futures:
        future.result()  # raises the task's own exception


def train(config: TrainConfig) -> dict[str, Any]:
    """Run the `pokevq` flow from Python with a `TrainConfig` (README: "From Python")."""
    with temporary_server_patience():
        return pokevq(**config.to_dict())
