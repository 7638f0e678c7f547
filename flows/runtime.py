"""What the flow takes from its Prefect run: a stable experiment name and the S3 block's credentials."""

from __future__ import annotations

import logging
import os
from datetime import datetime

from prefect.runtime import flow_run

from pokevq import settings
from pokevq.config import default_experiment_name, nightly_experiment_name

log = logging.getLogger(__name__)



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
    """`nightly-YYYYMMDD` for scheduled retraining, else `pokevq-YYYYMMDD-HHMMSS`, fixed per flow run."""
    moment = run_started_at()
    return nightly_experiment_name(moment) if nightly else default_experiment_name(moment)


def load_bucket_block() -> str | None:
    """Export the S3Bucket block's credentials to this run's process, for boto3's standard chain.

    The secret lives in the block (a SecretStr); it is never a parameter, never logged and
    never part of a task result. Returns the block's bucket name.
    """
    name = settings.s3_bucket_block()  # set in the deployment's job variables
    if not name:
        return None
    from prefect_aws import S3Bucket

    block = S3Bucket.load(name)
    credentials = block.credentials
    values = {
        "AWS_ACCESS_KEY_ID": credentials.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": (
            credentials.aws_secret_access_key.get_secret_value() if credentials.aws_secret_access_key else None
        ),
        "AWS_SESSION_TOKEN": credentials.aws_session_token,
        "AWS_REGION": credentials.region_name,
        "AWS_ENDPOINT_URL": credentials.aws_client_parameters.endpoint_url,
        "S3_BUCKET_NAME": block.bucket_name,
    }
    for key, value in values.items():
        if value:
            os.environ[key] = str(value)
    log.info("Using S3 bucket %s from the %r block", block.bucket_name, name)
    return block.bucket_name
