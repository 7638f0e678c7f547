"""validate → acquire_lease → index_manifest → (pack_new_frames) → warm_cache: everything before training."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from pokevq.config import TrainConfig
from pokevq.data.manifest import index_frames, summarize
from pokevq.data.pack import pack
from pokevq.data.warm import warm_units
from pokevq.layout import Layout
from pokevq.run.lease import Lease, LeaseOwner
from pokevq.run.nightly import next_nightly_name
from pokevq.run.resume import check_resume_exists
from pokevq.run.session import RunSession, Stopwatch
from pokevq.run.validate import StoragePlan, validate_setup
from pokevq.storage import S3Credentials
from tasks.common import IO_RETRY, IO_TASK, retry_unless_unreachable


@task(
    name="validate",
    task_run_name="validate",
    # an unreachable endpoint answers at once; throttling is retried
    **(IO_TASK | dict(retry_condition_fn=retry_unless_unreachable)),
)
def validate(config: TrainConfig, credentials: S3Credentials | None = None) -> dict[str, Any]:
    """Credentials, endpoint, bucket, permissions, frames, cache dir, resume checkpoint; decides the fallback.

    Returns the storage plan (no secret in it): where frames are read and outputs written.
    """
    plan = validate_setup(config.storage, str(config.run.experiment_name), credentials)
    check_resume_exists(config, credentials)
    if plan.fallback_reason:
        get_run_logger().warning("S3 set-up failed, so this run FALLS BACK TO LOCAL STORAGE in %s: %s",
                                 plan.output_root, plan.fallback_reason)
    return plan.to_dict()


@task(name="name_nightly", task_run_name="name_nightly", **IO_TASK)  # cached: a retry keeps its name
def name_nightly(config: TrainConfig, plan: dict[str, Any], credentials: S3Credentials | None = None) -> str:
    """`nightly-YYYYMMDD`, or the day's next number when a nightly of that day already wrote anything."""
    storage = StoragePlan.from_dict(plan, credentials).output_storage()
    name = next_nightly_name(storage, Layout.for_config(config))
    if name != config.run.experiment_name:
        get_run_logger().info("%s already ran today: this nightly is %s", config.run.experiment_name, name)
    return name


@task(
    name="acquire_lease",
    task_run_name="acquire_lease",
    cache_policy=NO_CACHE,  # a retried flow run takes its lease again
    **IO_RETRY,
)
def acquire_lease(run: RunSession) -> dict[str, Any]:
    """Take the experiment's lease (checkpoints/<experiment>/.lease.json) or refuse to start.

    Runs before anything is written for the experiment; the run keeps it renewed and releases
    it when it closes, whatever the outcome.
    """
    lease = Lease.for_experiment(run.storage, run.layout.checkpoints, str(run.config.run.experiment_name),
                                 LeaseOwner.current(flow_run.id))
    takeover = lease.acquire()
    run.hold_lease(lease)  # logs a takeover to the run's log
    return {"lease": lease.uri, "holder": lease.describe(), "taken_over": takeover}


@task(name="index_manifest", task_run_name="index_manifest", **IO_TASK)
def index_manifest(run: RunSession, plan: dict[str, Any]) -> dict[str, Any]:
    """List every frame where the plan says they are, split by episode, and save the manifest as Parquet."""
    with Stopwatch(run, "index_manifest"):
        manifest = index_frames(run.frames_storage, plan["frames_prefix"], run.config.data.val_fraction,
                                run.config.optim.seed)
        uri = run.save_manifest(manifest)
    facts = summarize(manifest)
    get_run_logger().info(
        "Indexed %d frames (%d train / %d val, split by episode); manifest at %s",
        facts["frames"], facts["train_frames"], facts["val_frames"], uri,
    )
    return {**facts, "manifest_uri": uri}


@task(name="pack_new_frames", task_run_name="pack_new_frames", **IO_TASK)
def pack_new_frames(run: RunSession, manifest: dict[str, Any]) -> dict[str, Any]:
    """Pack the frames that arrived since the last pack (nightly), so training reads shards, not frame by frame."""
    with Stopwatch(run, "pack_new_frames"):
        result = pack(run.frames_storage, run.plan.frames_prefix, manifest=run.manifest_at(manifest["manifest_uri"]))
    get_run_logger().info(
        "Packed %d new frame(s) into %d shard(s); the shard index lists %d of %d frames",
        result.frames, result.shards, result.indexed, manifest["frames"],
    )
    return result.to_dict()


@task(name="warm_cache", task_run_name="warm_cache", **IO_TASK)
def warm_cache(run: RunSession, manifest: dict[str, Any]) -> dict[str, Any]:
    """Read every shard and loose unit into the local store before training, when the bucket fits it.

    Decides how the frames are read first: a bucket larger than the cache streams during training
    instead, so nothing is read here; a cache limit below one shard fails here.
    The flow runs it after the nightly's pack (`wait_for`): shards written there are read here.
    """
    frames = run.manifest_at(manifest["manifest_uri"])
    with Stopwatch(run, "warm_cache"):
        path = run.reader
        # Several machines each read their own shares into their own caches while training: none is warmed here.
        stats = warm_units(path, frames, run.source, run.config.model.image_hw,
                           enabled=run.config.distributed.nnodes == 1)
    stats.update(directory=str(run.cache.directory), temporary=bool(run.cache.temporary), data_path=path.describe())
    return stats
