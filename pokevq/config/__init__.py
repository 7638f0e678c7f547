"""One typed configuration for every way of starting a run, declared once, by concern.

The guide's option names (`use_s3`, `s3_bucket`, `num_epochs`, `local_cache_dir`, ...) are the
fields of the sections: storage, run, schedule, data, optim, distributed, model. CLI flags, the
flows' parameters, environment defaults and Python calls all build a `TrainConfig` from those flat
names, and each section checks its own values once, when it is made.
"""

from pokevq.config.data import DATA_PATHS, DataOptions
from pokevq.config.distributed import DEVICES, DistributedOptions
from pokevq.config.model import ModelOptions
from pokevq.config.optim import LR_SCHEDULES, PRECISIONS, OptimOptions
from pokevq.config.options import Sectioned, flag_for, option
from pokevq.config.run import RunOptions
from pokevq.config.schedule import ScheduleOptions
from pokevq.config.storage import (
    BUCKET_READ_OPTIONS,
    BUCKET_WRITE_OPTIONS,
    S3_SSE_MODES,
    BucketConfig,
    BucketReadConfig,
    StorageOptions,
)
from pokevq.config.train import TrainConfig
from pokevq.config.values import (
    DEFAULT_IMAGE_SIZE,
    default_experiment_name,
    nightly_experiment_name,
    parse_duration,
    parse_image_size,
)

__all__ = [
    "BUCKET_READ_OPTIONS", "BUCKET_WRITE_OPTIONS", "DATA_PATHS", "DEFAULT_IMAGE_SIZE", "DEVICES", "LR_SCHEDULES",
    "PRECISIONS", "S3_SSE_MODES", "BucketConfig", "BucketReadConfig", "DataOptions", "DistributedOptions",
    "ModelOptions", "OptimOptions", "RunOptions", "ScheduleOptions", "Sectioned", "StorageOptions",
    "TrainConfig", "default_experiment_name", "flag_for", "nightly_experiment_name", "option",
    "parse_duration", "parse_image_size",
]
