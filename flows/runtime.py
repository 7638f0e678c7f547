"""What the flow takes from its Prefect run: a stable experiment name and the S3 block's credentials."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prefect.runtime import flow_run

from pokevq import settings
from pokevq.config import default_experiment_name, nightly_experiment_name
from pokevq.errors import ConfigError, PokevqError
from pokevq.storage import S3Credentials

log = logging.getLogger(__name__)

TEMPORARY_SERVER_WAIT_S = 120  # Prefect waits 20 s; a fresh database on a busy 2-core machine can take longer
_WAIT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


@contextmanager
def temporary_server_patience() -> Iterator[None]:
    """Give Prefect's temporary server time to start on a busy machine, and say in one line if it never does.

    A user's own `PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS` wins; the wait only matters when
    no `PREFECT_API_URL` is set (the temporary server starts once per process).
    """
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    wait_s = int(os.environ.get(_WAIT_SETTING) or TEMPORARY_SERVER_WAIT_S)
    try:
        if _WAIT_SETTING in os.environ:
            yield
        else:
            with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: wait_s}):
                yield
    except RuntimeError as exc:
        if "ephemeral Prefect API server" not in str(exc):
            raise
        raise PokevqError(
            f"Prefect's temporary server did not start within {wait_s} s: set {_WAIT_SETTING} higher, "
            "or start one with `prefect server start` and set PREFECT_API_URL to it"
        ) from exc



def run_started_at() -> datetime | None:
    """When this flow run was scheduled to start: the same on every retry of the run."""
    if not flow_run.id:
        return None
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
    moment = run.expected_start_time or run.created
    return moment.astimezone() if moment else None


def experiment_name_for_run(nightly: bool) -> str:
    """`nightly-YYYYMMDD` for scheduled retraining, else `pokevq-YYYYMMDD-HHMMSS`, fixed per flow run.

    A day's second nightly is numbered later, once the bucket is known (`tasks.setup.name_nightly`:
    `nightly-YYYYMMDD-2`, ...), and that choice is cached per flow run too.
    """
    moment = run_started_at()
    return nightly_experiment_name(moment) if nightly else default_experiment_name(moment)


@dataclass(frozen=True)
class BucketBlock:
    """What a deployment's S3Bucket block gives a run: where the bucket is, and the keys to reach it."""

    bucket: str
    region: str | None
    endpoint_url: str | None
    credentials: S3Credentials | None

    def fill(self, parameters: dict[str, Any]) -> None:
        """Bucket, region and endpoint from the block, where the run's parameters leave them unset."""
        for name, value in (("s3_bucket", self.bucket), ("s3_region", self.region),
                            ("s3_endpoint_url", self.endpoint_url)):
            if value and not parameters.get(name):
                parameters[name] = value


def load_bucket_block() -> BucketBlock | None:
    """The S3Bucket block named by `$POKEVQ_S3_BUCKET_BLOCK` (set in the deployment's job variables).

    The secret lives in the block (a SecretStr) and goes from it to this run's S3 clients only:
    never a parameter, never the process environment, never logged, never part of a task result.
    """
    name = settings.s3_bucket_block()
    if not name:
        return None
    from prefect_aws import S3Bucket

    try:
        block = S3Bucket.load(name)
    except ValueError as exc:  # no such block, or one of another type
        raise ConfigError(
            f"POKEVQ_S3_BUCKET_BLOCK names the S3Bucket block {name!r}, which cannot be loaded "
            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}): create it "
            "(`pokevq stack up` does) or unset POKEVQ_S3_BUCKET_BLOCK"
        ) from exc
    aws = block.credentials
    secret = aws.aws_secret_access_key.get_secret_value() if aws.aws_secret_access_key else None
    keys = None
    if aws.aws_access_key_id and secret:
        token = aws.aws_session_token
        keys = S3Credentials(str(aws.aws_access_key_id), secret,
                             token.get_secret_value() if hasattr(token, "get_secret_value") else token)
    log.info("Using S3 bucket %s from the %r block", block.bucket_name, name)
    return BucketBlock(bucket=block.bucket_name, region=aws.region_name,
                       endpoint_url=aws.aws_client_parameters.endpoint_url, credentials=keys)
