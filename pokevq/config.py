"""One typed configuration for every way of starting a run.

The README's option names (`use_s3`, `s3_bucket`, `num_epochs`, `local_cache_dir`, ...)
are the field names; CLI flags, environment variables, flow parameters and Python
calls all build a `TrainConfig`, so a value is validated in exactly one place.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from pokevq.errors import ConfigError
from pokevq.model.options import DOWNSAMPLE_FACTORS, ENCODER_KERNELS, MODEL_CHOICES, fsq_levels
from pokevq.settings import aws_endpoint_url, aws_region, s3_bucket_name

DEFAULT_IMAGE_SIZE = "144x160"
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp32")
LR_SCHEDULES = ("constant", "cosine")  # pokevq.train.schedule
S3_SSE_MODES = ("AES256", "aws:kms")
DATA_PATHS = ("auto", "cached", "streaming")

def flag_for(name: str) -> str:
    """The CLI flag of a config field, so error messages name what the user typed."""
    found = _FIELDS.get(name)
    flag = found.metadata.get("flag") if found is not None else None
    return flag or "--" + name.replace("_", "-")


def parse_image_size(value: str) -> tuple[int, int]:
    """Parse `HxW` (e.g. `144x160`) into (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(value))
    if not match:
        raise ConfigError(
            f"image_size ({flag_for('image_size')}) must look like HxW, e.g. 144x160; got {value!r}"
        )
    height, width = int(match.group(1)), int(match.group(2))
    if height < 8 or width < 8:
        raise ConfigError(f"image_size ({flag_for('image_size')}) must be at least 8x8; got {value!r}")
    return height, width


def parse_duration(value: str | float) -> float:
    """`90`, `90s`, `30m`, `6h` or `1d` -> seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value).lower())
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)] if match else 0
    if not seconds > 0:
        raise ConfigError(
            f"time_budget ({flag_for('time_budget')}) must be a duration like 90m, 6h or a number of seconds; "
            f"got {value!r}"
        )
    return seconds


def default_experiment_name(now: datetime | None = None) -> str:
    """Auto-generated experiment names sort by time: `pokevq-20261126-031500`."""
    return (now or datetime.now()).strftime("pokevq-%Y%m%d-%H%M%S")


def nightly_experiment_name(day: datetime | None = None) -> str:
    """Scheduled runs are named after their date: `nightly-20261126`."""
    return (day or datetime.now()).strftime("nightly-%Y%m%d")


def option(default: Any, group: str, help: str, *, model: str | None = None, flag: str | None = None,
           parse: str | None = None, metavar: str | None = None) -> Any:
    """A `TrainConfig` field with what the CLI, the flow's docs and `ModelConfig` read from it.

    `group` sorts the flag into the CLI's help (S3, cache, training, model); a model option names
    its `ModelConfig` field (`model`, default: the same name). `flag` overrides the flag's name,
    `parse="size"` reads byte sizes such as 20GB, `metavar` names the value in the help.
    """
    metadata = {"help": help, "group": group, "flag": flag, "parse": parse, "metavar": metavar}
    if group == "model":
        metadata["model"] = model or ""
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every option of a training run, with the README's names and defaults."""

    # --- S3 options (README: S3 options) ---
    use_s3: bool = option(False, "S3", "Read frames from S3 and write outputs there.")
    s3_bucket: str | None = option(None, "S3", "S3 bucket name (default: $S3_BUCKET_NAME).")
    s3_region: str | None = option(None, "S3", "AWS region (default: $AWS_REGION, else us-east-1).")
    s3_endpoint_url: str | None = option(
        None, "S3",
        "S3 endpoint for MinIO, R2 or a local server (default: $AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL, else "
        "AWS).",
    )
    s3_checkpoint_prefix: str = option("checkpoints", "S3", "S3 prefix for checkpoints.")
    s3_tensorboard_prefix: str = option("tensorboard", "S3", "S3 prefix for TensorBoard logs.")
    s3_logs_prefix: str = option("logs", "S3", "S3 prefix for training logs.")
    s3_sse: str | None = option(
        None, "S3",
        "Server-side encryption of every object written: AES256 or aws:kms (default: the bucket's).",
    )
    s3_kms_key_id: str | None = option(
        None, "S3",
        "KMS key id or ARN for --s3-sse aws:kms (default: the aws/s3 managed key).",
    )
    expected_bucket_owner: str | None = option(
        None, "S3",
        "12-digit AWS account id that must own the bucket; every S3 request is refused otherwise.",
    )
    local_cache_dir: str | None = option(
        None, "cache",
        "Local frame cache directory, kept between runs (default: a temp dir removed at exit).",
        flag="--cache-dir",
    )
    max_cache_size: int = option(1000, "cache", "Max images to cache locally.")
    max_cache_bytes: int | None = option(
        None, "cache",
        "Optional byte limit of the local cache, e.g. 20GB (the streaming path's shard files included; default for "
        "those: 8 GiB, at most half the free disk).",
        parse="size",
    )
    no_fallback: bool = option(False, "S3", "Fail instead of falling back to local storage when S3 setup fails.")

    # --- Training options (README: training options) ---
    frames_dir: str = option(
        "pokemon_frames", "training",
        "S3 prefix of the training frames (a local folder without --use-s3).",
    )
    experiment_name: str | None = option(None, "training", "Name of this experiment (default: pokevq-YYYYMMDD-HHMMSS).")
    batch_size: int = option(16, "training", "Training batch size.")
    num_epochs: int = option(50, "training", "Total number of training epochs.", flag="--epochs")
    learning_rate: float = option(1e-4, "training", "AdamW learning rate.")
    lr_schedule: str = option(
        "constant", "training",
        "constant, or cosine: the learning rate falls along a half cosine to a tenth of it by the last epoch.",
    )
    warmup_steps: int = option(0, "training", "Steps over which the learning rate rises linearly from 0 (0: none).")

    # --- Run options ---
    resume: str | None = option(None, "training", "Checkpoint to resume from: s3://bucket/key or a local path.")
    output_dir: str = option("./outputs", "training", "Root of local outputs.")
    device: str = option("auto", "training", "auto (CUDA when present), cpu, cuda or mps.")
    precision: str = option(
        "auto", "training",
        "auto (bf16 autocast on CUDA, fp32 elsewhere), bf16 (autocast on any device) or fp32.",
    )
    seed: int = option(0, "training", "Random seed for the split, init and shuffling.")
    num_workers: int = option(2, "training", "DataLoader worker processes.")
    val_fraction: float = option(0.1, "training", "Share of episodes held out for validation.")
    debug: bool = option(False, "training", "Debug logging (botocore too) and tracebacks.")
    nightly: bool = option(
        False, "training",
        "A scheduled retraining run: experiment nightly-YYYYMMDD (the day's second: nightly-YYYYMMDD-2, ...), never "
        "falls back to local storage.",
    )
    warm_start: bool = option(
        True, "training",
        "With --nightly, start from the previous nightly's checkpoint_best.pt (the same day's, if any) when one "
        "exists.",
    )
    tokenize_after: bool | None = option(
        None, "training",
        "After training, tokenize the frames with the run's best checkpoint (the pokevq-tokenize flow); default: on "
        "with --nightly, off otherwise.",
        flag="--tokenize-after",
    )
    data_path: str = option(
        "auto", "cache",
        "Deprecated and ignored: every run reads its frames one way (auto, cached or streaming are accepted, with "
        "a warning for the last two, so existing commands and deployments keep working).",
    )
    checkpoint_every_steps: int = option(
        0, "training",
        "Also write a resumable mid-epoch checkpoint every N training steps (0: epochs only).",
    )
    max_steps: int = option(
        0, "training",
        "End training after this many steps in all, with a checkpoint (0: no limit).",
    )
    time_budget: str | None = option(
        None, "training",
        "End training at a step boundary once this run has trained this long, with a checkpoint: e.g. 90m, 6h or "
        "seconds.",
    )

    # --- Distributed training: torchrun's names (pokevq.dist) ---
    nproc_per_node: int | str = option(
        1, "distributed",
        "Training processes on this machine, one per GPU (auto: every visible GPU; with --device cpu, processes "
        "that share the CPU over gloo).",
        parse="nproc", metavar="N",
    )
    nnodes: int = option(1, "distributed", "Machines that train together.")
    node_rank: int = option(
        0, "distributed",
        "This machine's place among --nnodes (0 runs the flow; the others only train).",
    )
    rdzv_endpoint: str | None = option(
        None, "distributed",
        "host:port where the machines meet: machine 0's address and a free port (default on one machine: "
        "127.0.0.1 and a free port).",
        metavar="HOST:PORT",
    )

    # --- Model: the tokenizer's shape (ModelConfig is derived from these) ---
    image_size: str = option(
        DEFAULT_IMAGE_SIZE, "model",
        "Frame size HxW fed to the model (Game Boy: 144x160).",
        metavar="HxW",
    )
    hidden_channels: int = option(128, "model", "Channels of the encoder/decoder (patch: of the decoder's context).")
    codebook_size: int = option(65536, "model", "Number of codebook vectors (65,536: 16 bits per token).")
    embedding_dim: int = option(64, "model", "Dimension of each codebook vector (tile and conv).")
    downsample: int = option(8, "model", "Spatial downsampling factor: 4, 8 or 16.")
    architecture: str = option(
        "patch", "model",
        "patch (codes are pixel patches seeded from the training frames at every offset, a decoder that "
        "corrects from neighbouring codes), tile (a learned encoder per patch, convolutions on the code grid) "
        "or conv.",
    )
    quantizer: str = option(
        "ema", "model",
        "ema (EMA codebook), vq (codebook learned by gradient) or fsq (finite scalar quantization); tile and conv.",
    )
    codebook_init: str = option(
        "kmeans", "model",
        "Codebook initialisation on the first batch: kmeans, data or random (tile and conv).",
    )
    dead_code_restart: str = option(
        "worst", "model",
        "Restart unused codes on the worst-represented latents (worst), random latents, or off (tile and conv).",
    )
    code_dim: int = option(
        0, "model",
        "Look codes up in a learned projection of this many dimensions (0: embedding_dim).",
    )
    cosine_codes: bool = option(
        False, "model",
        "Look codes up by cosine similarity (l2-normalised codes).",
        model="cosine",
    )
    encoder_kernel: int = option(
        1, "model",
        "Encoder kernel on the tile grid: 1 (a code from its own tile's pixels) or 3 (a code also sees the tiles "
        "around it).",
    )
    num_res_blocks: int = option(
        2, "model",
        "Residual blocks at each end of the encoder and decoder (0: none): depth for frames a small model blurs.",
    )

    def __post_init__(self) -> None:
        self._resolve_environment()
        self._validate()

    # ------------------------------------------------------------------ set-up
    def _resolve_environment(self) -> None:
        """Fill what the README says comes from the environment, once, at construction."""
        resumed_bucket, resumed_experiment = self._from_resume_uri()
        if not self.s3_bucket:
            self.s3_bucket = s3_bucket_name() or (resumed_bucket if self.use_s3 else None)
        if not self.experiment_name and resumed_experiment:
            self.experiment_name = resumed_experiment  # resuming continues the same experiment
        if not self.s3_region:
            self.s3_region = aws_region() or "us-east-1"
        if not self.s3_endpoint_url:
            self.s3_endpoint_url = aws_endpoint_url()
        if not self.experiment_name:
            self.experiment_name = nightly_experiment_name() if self.nightly else default_experiment_name()
        if self.nightly:
            self.no_fallback = True  # a nightly run on a worker's local disk would be lost

    def _from_resume_uri(self) -> tuple[str | None, str | None]:
        """Bucket and experiment of `s3://bucket/<checkpoint prefix>/<experiment>/file.pt` (or a local path)."""
        if not self.resume:
            return None, None
        resume = str(self.resume)
        bucket = None
        if resume.startswith("s3://"):
            bucket, _, key = resume[len("s3://"):].partition("/")
        else:
            key = resume.replace("\\", "/")
        parts = [p for p in key.split("/") if p]
        prefix = [p for p in self.s3_checkpoint_prefix.split("/") if p]
        experiment = None
        if len(parts) >= len(prefix) + 2 and parts[-(len(prefix) + 2):-2] == prefix:
            experiment = parts[-2]
        return bucket or None, experiment

    def _validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ConfigError(f"{name} ({flag_for(name)}) {message}")

        self._validate_training(fail)
        self._validate_model(fail)
        self._validate_distributed(fail)
        self._validate_storage(fail)

    def _validate_training(self, fail: Any) -> None:
        for name in ("batch_size", "max_cache_size", "hidden_channels", "codebook_size", "embedding_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, f"must be a positive integer; got {value!r}")
        if isinstance(self.num_epochs, bool) or not isinstance(self.num_epochs, int) or self.num_epochs < 0:
            fail("num_epochs", f"must be an integer >= 0; got {self.num_epochs!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            fail("num_workers", f"must be an integer >= 0; got {self.num_workers!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            fail("seed", f"must be an integer; got {self.seed!r}")
        if self.max_cache_bytes is not None and (
            not isinstance(self.max_cache_bytes, int) or self.max_cache_bytes < 1
        ):
            fail("max_cache_bytes", f"must be a positive integer; got {self.max_cache_bytes!r}")
        if self.data_path not in DATA_PATHS:
            fail("data_path", f"must be one of {', '.join(DATA_PATHS)}; got {self.data_path!r}")
        for name in ("checkpoint_every_steps", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(name, f"must be an integer >= 0 (0: off); got {value!r}")
        if self.time_budget is not None:
            self.time_budget = str(self.time_budget).strip() or None
            if self.time_budget is not None:
                parse_duration(self.time_budget)
        if not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            fail("learning_rate", f"must be > 0; got {self.learning_rate!r}")
        if not isinstance(self.val_fraction, (int, float)) or not 0 <= self.val_fraction < 1:
            fail("val_fraction", f"must be in [0, 1); got {self.val_fraction!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            fail("lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            fail("warmup_steps", f"must be an integer >= 0 (0: no warm-up); got {self.warmup_steps!r}")

    def _validate_model(self, fail: Any) -> None:
        if self.encoder_kernel not in ENCODER_KERNELS:
            fail("encoder_kernel", f"must be 1 or 3; got {self.encoder_kernel!r}")
        if isinstance(self.num_res_blocks, bool) or not isinstance(self.num_res_blocks, int) or self.num_res_blocks < 0:
            fail("num_res_blocks", f"must be an integer >= 0; got {self.num_res_blocks!r}")
        if self.downsample not in DOWNSAMPLE_FACTORS:
            fail("downsample", f"must be one of 4, 8, 16; got {self.downsample!r}")
        if self.device not in DEVICES:
            fail("device", f"must be one of {', '.join(DEVICES)}; got {self.device!r}")
        if self.precision not in PRECISIONS:
            fail("precision", f"must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        for name, allowed in MODEL_CHOICES.items():
            if getattr(self, name) not in allowed:
                fail(name, f"must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if isinstance(self.code_dim, bool) or not isinstance(self.code_dim, int) or self.code_dim < 0:
            fail("code_dim", f"must be an integer >= 0 (0: look codes up in embedding_dim); got {self.code_dim!r}")
        if self.quantizer == "fsq":
            try:
                fsq_levels(self.codebook_size)
            except ConfigError:
                fail(
                    "codebook_size",
                    f"{self.codebook_size} cannot be an FSQ codebook with --quantizer fsq: use a product of "
                    "levels from 3 to 8, e.g. 64, 125, 216, 512 or 1000",
                )
        height, width = parse_image_size(self.image_size)
        self.image_size = f"{height}x{width}"
        if height % self.downsample or width % self.downsample:
            fail(
                "image_size",
                f"{self.image_size} must be divisible by downsample {self.downsample} in both dimensions",
            )

    def _validate_storage(self, fail: Any) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.experiment_name or ""):
            fail(
                "experiment_name",
                "must be 1-128 characters of letters, digits, '.', '_' or '-' "
                f"(it becomes an S3 prefix); got {self.experiment_name!r}",
            )
        for name in ("s3_checkpoint_prefix", "s3_tensorboard_prefix", "s3_logs_prefix"):
            value = getattr(self, name).strip("/")
            if not value or ".." in value.split("/"):
                fail(name, f"must be a non-empty prefix without '..'; got {getattr(self, name)!r}")
            setattr(self, name, value)
        if self.s3_sse is not None and self.s3_sse not in S3_SSE_MODES:
            fail("s3_sse", f"must be one of {', '.join(S3_SSE_MODES)}; got {self.s3_sse!r}")
        kms_key = self.s3_kms_key_id
        if kms_key is not None and (not isinstance(kms_key, str) or not kms_key.strip()):
            fail("s3_kms_key_id", f"must be a KMS key id or ARN; got {self.s3_kms_key_id!r}")
        if self.s3_kms_key_id is not None and self.s3_sse != "aws:kms":
            fail("s3_kms_key_id", f"is only used with --s3-sse aws:kms; got s3_sse={self.s3_sse!r}")
        if self.expected_bucket_owner is not None and not (
            isinstance(self.expected_bucket_owner, str) and re.fullmatch(r"\d{12}", self.expected_bucket_owner)
        ):
            fail("expected_bucket_owner", f"must be a 12-digit AWS account id; got {self.expected_bucket_owner!r}")
        if self.use_s3 and self.frames_dir.strip("/") and ".." in self.frames_dir.split("/"):
            fail("frames_dir", f"must not contain '..'; got {self.frames_dir!r}")
        if self.use_s3:
            from pokevq.storage.addresses import check_endpoint_and_region

            check_endpoint_and_region(self.s3_endpoint_url, self.s3_region)

    def _validate_distributed(self, fail: Any) -> None:
        nproc = self.nproc_per_node
        if isinstance(nproc, str) and nproc.strip().isdigit():
            nproc = int(nproc.strip())
        if nproc != "auto" and (isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1):
            fail("nproc_per_node", f"must be a positive integer or auto; got {self.nproc_per_node!r}")
        self.nproc_per_node = nproc
        for name in ("nnodes", "node_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "nnodes" else 0):
                fail(name, f"must be an integer >= {1 if name == 'nnodes' else 0}; got {value!r}")
        if self.node_rank >= self.nnodes:
            fail("node_rank", f"must be below --nnodes {self.nnodes}; got {self.node_rank}")
        if self.rdzv_endpoint is not None:
            self.rdzv_endpoint = str(self.rdzv_endpoint).strip() or None
        if self.rdzv_endpoint is not None and not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", self.rdzv_endpoint):
            fail("rdzv_endpoint", f"must be host:port, e.g. 10.0.0.1:29500; got {self.rdzv_endpoint!r}")
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            fail("rdzv_endpoint", "is needed with --nnodes above 1: machine 0's address and a free port, e.g. "
                                  "10.0.0.1:29500")
        if self.nnodes > 1 and nproc == "auto" and self.device == "cpu":
            fail("nproc_per_node", "auto counts GPUs; with --device cpu give a number")

    # -------------------------------------------------------------- accessors
    @property
    def time_budget_seconds(self) -> float | None:
        return parse_duration(self.time_budget) if self.time_budget else None

    @property
    def image_hw(self) -> tuple[int, int]:
        return parse_image_size(self.image_size)

    def model_options(self) -> dict[str, Any]:
        """The model options as `ModelConfig` names them (image size as (H, W)): the model is built from these."""
        options = {f.metadata.get("model") or f.name: getattr(self, f.name)
                   for f in fields(self) if f.metadata.get("group") == "model"}
        options["image_size"] = self.image_hw
        return options

    @property
    def tokenizes_after(self) -> bool:
        return self.nightly if self.tokenize_after is None else bool(self.tokenize_after)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able values: what goes into checkpoints, reports and flow parameters."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, refusing unknown keys so a typo is not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def masked(self) -> dict[str, Any]:
        """The configuration as shown to people: no secret ever appears in it."""
        shown = self.to_dict()
        for name in list(shown):
            if re.search(r"secret|password|token", name):
                shown[name] = "****"
        return shown


_FIELDS = {f.name: f for f in fields(TrainConfig)}


def field_help() -> dict[str, str]:
    """Help text of each option, shared by the CLI and the flow's parameter docs."""
    return {f.name: f.metadata.get("help", "") for f in fields(TrainConfig)}
