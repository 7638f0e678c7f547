"""The `POKEVQ_*` environment knobs: operators' settings that are not run options.

Each is read when it is used (so a deployment's job environment applies to the run that
starts with it) and parsed here, with one error style: the variable, what it must be, and
the value it had. Run options live in `pokevq.config.TrainConfig`, never here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pokevq.data.sizes import parse_size
from pokevq.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Knob:
    name: str
    default: Any
    parse: Callable[[str], Any]  # raises ValueError with what the value must be
    help: str

    def value(self) -> Any:
        raw = os.environ.get(self.name)
        if raw is None or (not raw.strip() and self.name not in _EMPTY_MEANS_SOMETHING):
            return self.default
        try:
            return self.parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"{self.name} must be {exc}; got {raw!r}") from None


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return int(text)

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 1:
        raise ValueError("a number of seconds >= 1")
    return value


def _byte_count(text: str) -> int:
    try:
        return parse_size(text, "") if not text.isdigit() else int(text)
    except ConfigError:
        raise ValueError("a number of bytes such as 8GB or 0 (off)") from None


def _delays(text: str) -> list[float]:
    try:
        delays = [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        delays = [-1.0]
    if any(delay < 0 for delay in delays) or len(delays) > 50:
        raise ValueError("up to 50 comma-separated seconds >= 0 (e.g. 2,4,8; empty for no retries)")
    return delays


def _text(text: str) -> str:
    return text


def _appendable_file(text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    folder = os.path.dirname(path)
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError("a file pokevq can append to, in an existing folder it may write")
    return path


HEARTBEAT_SECONDS = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY in deployments/prefect.yaml: Prefect's minimum

S3_MAX_ATTEMPTS = Knob("POKEVQ_S3_MAX_ATTEMPTS", 8, _integer(1, 50),
                       "Attempts per S3 request (botocore adaptive retries) before it fails.")
LEASE_TTL = Knob("POKEVQ_LEASE_TTL", 600.0, _seconds,
                 "Seconds an experiment's lease lasts without renewal (renewed every third of it).")
TASK_RETRY_DELAYS = Knob("POKEVQ_TASK_RETRY_DELAYS", [2.0, 4.0, 8.0], _delays,
                         "Seconds before each retry of an I/O task (one retry per entry).")
FRAME_LOG = Knob("POKEVQ_FRAME_LOG", None, _appendable_file,
                 "A file to append `epoch step key` to for every frame trained (an audit trail).")
S3_BUCKET_BLOCK = Knob("POKEVQ_S3_BUCKET_BLOCK", None, _text,
                       "The Prefect S3Bucket block whose bucket and credentials a deployment's runs use.")
DIST_TIMEOUT = Knob("POKEVQ_DIST_TIMEOUT", 1800.0, _seconds,
                    "Seconds a training process waits for the others (to start, or at a step) before the run fails.")

ZOMBIE_SECONDS = Knob("POKEVQ_ZOMBIE_SECONDS", 90, _integer(HEARTBEAT_SECONDS + 5, 86400),
                      "Seconds without a heartbeat before `pokevq stack up`'s automation marks a flow run Crashed "
                      f"(runs send one every {HEARTBEAT_SECONDS} s).")

KNOBS = (S3_MAX_ATTEMPTS, LEASE_TTL, TASK_RETRY_DELAYS, FRAME_LOG, S3_BUCKET_BLOCK, DIST_TIMEOUT,
         ZOMBIE_SECONDS)
_EMPTY_MEANS_SOMETHING = {TASK_RETRY_DELAYS.name}  # "" turns retries off
RUN_KNOBS = tuple(knob for knob in KNOBS if knob is not ZOMBIE_SECONDS)  # ZOMBIE_SECONDS: `pokevq stack up` only


# Knobs of earlier versions that no longer do anything: a run says so once instead of ignoring them silently.
RETIRED_KNOBS = {
    "POKEVQ_DECODED_CACHE_BYTES": "decoded frames are kept as units within --max-cache-bytes; unset it",
}


def check_run_knobs() -> None:
    """Read every knob a run uses, so a bad value stops the run before it starts, in one line naming it."""
    for knob in RUN_KNOBS:
        knob.value()
    for name, instead in RETIRED_KNOBS.items():
        if os.environ.get(name) is not None:
            log.warning("%s is no longer used (%s)", name, instead)


def s3_max_attempts() -> int:
    return int(S3_MAX_ATTEMPTS.value())


def lease_ttl() -> float:
    return float(LEASE_TTL.value())


def task_retry_delays() -> list[float]:
    return list(TASK_RETRY_DELAYS.value())


def dist_timeout() -> float:
    return float(DIST_TIMEOUT.value())


def frame_log() -> str | None:
    return FRAME_LOG.value()


def s3_bucket_block() -> str | None:
    return S3_BUCKET_BLOCK.value()


def zombie_seconds() -> int:
    return int(ZOMBIE_SECONDS.value())


# --------------------------------------------------------------------------------------------------
# The environment other tools set: the AWS SDK's region and endpoint, and torchrun's process contract.
# Read here too, so no other module of the library reads the environment.

NODE_CACHE_DIR = "POKEVQ_NODE_CACHE_DIR"  # a machine's --cache-dir, for its ranks (set by `run_node`)
DIST_BACKEND = "POKEVQ_DIST_BACKEND"  # the process group's backend, for the ranks a launcher starts


def _first(*names: str) -> str | None:
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


def aws_region() -> str | None:
    """$AWS_REGION, else $AWS_DEFAULT_REGION (as the AWS CLI reads them)."""
    return _first("AWS_REGION", "AWS_DEFAULT_REGION")


def aws_endpoint_url() -> str | None:
    """$AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL (the SDKs' service-specific endpoint first)."""
    return _first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def torchrun_rank() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) of a process that torchrun or pokevq's launcher started."""
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def on_first_machine() -> bool:
    """GROUP_RANK 0 (or unset): the machine that runs the flow."""
    return os.environ.get("GROUP_RANK", "0") == "0"


def master_address() -> str:
    return os.environ.get("MASTER_ADDR", "?")


def dist_backend() -> str:
    return os.environ.get(DIST_BACKEND, "gloo")


def node_cache_dir() -> str | None:
    return os.environ.get(NODE_CACHE_DIR) or None


def set_node_cache_dir(path: str) -> None:
    os.environ[NODE_CACHE_DIR] = path


def omp_threads() -> str:
    """OMP_NUM_THREADS for the ranks: the operator's, else 1 (ranks share the machine's cores)."""
    return os.environ.get("OMP_NUM_THREADS", "1")


def s3_bucket_name() -> str | None:
    """$S3_BUCKET_NAME: the guide's default bucket."""
    return _first("S3_BUCKET_NAME")
