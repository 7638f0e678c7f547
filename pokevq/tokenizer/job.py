"""One tokenization of a bucket: its options (`TokenizeConfig`) and what it keeps between steps.

The `pokevq-tokenize` flow runs the steps as tasks: validate storage → load the tokenizer →
index the frames → tokenize the episodes → write the index, the lineage and the report.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pokevq.config import DEVICES, TrainConfig
from pokevq.data.cache import FrameCache
from pokevq.data.manifest import index_frames, to_parquet_bytes
from pokevq.data.source import FrameSource
from pokevq.errors import ConfigError
from pokevq.run.validate import StoragePlan, validate_setup
from pokevq.storage import S3Credentials
from pokevq.tokenizer.bucket import TokenizeResult, tokenize_bucket, write_index
from pokevq.tokenizer.model import Tokenizer
from pokevq.tokenizer.tokens import TokenSet
from pokevq.version import __version__

log = logging.getLogger(__name__)


@dataclass
class TokenizeConfig:
    """Every option of `pokevq tokenize` (and flow parameter of `pokevq-tokenize`)."""

    checkpoint: str
    use_s3: bool = False
    s3_bucket: str | None = None
    s3_region: str | None = None
    s3_endpoint_url: str | None = None
    s3_sse: str | None = None
    s3_kms_key_id: str | None = None
    expected_bucket_owner: str | None = None
    frames_dir: str = "pokemon_frames"
    output_dir: str = "./outputs"
    local_cache_dir: str | None = None
    max_cache_bytes: int | None = None
    batch_size: int = 64
    num_workers: int | None = None  # None: pokevq.tokenizer.bucket.auto_workers
    device: str = "auto"
    bf16: bool = False
    debug: bool = False

    def __post_init__(self) -> None:
        if not str(self.checkpoint or "").strip():
            raise ConfigError("checkpoint (--checkpoint) is needed: an s3:// URI or a local path of a checkpoint")
        for name in ("batch_size", "num_workers"):
            value = getattr(self, name)
            if value is None and name == "num_workers":
                continue
            low = 1 if name == "batch_size" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} (--{name.replace('_', '-')}) must be an integer >= {low}; got {value!r}")
        if self.device not in DEVICES or self.device == "mps":
            raise ConfigError(f"device (--device) must be auto, cpu or cuda; got {self.device!r}")
        if self.bf16 and self.device == "cpu":
            raise ConfigError("bf16 (--bf16) is for CUDA: with --device cpu leave --bf16 off (it encodes in fp32)")
        self.storage_config()  # the storage options are checked as a training run's are

    def storage_config(self, experiment: str = "tokens") -> TrainConfig:
        """The storage side as a `TrainConfig`, so validation, fallback rules and errors are the training run's."""
        return TrainConfig(use_s3=self.use_s3, s3_bucket=self.s3_bucket, s3_region=self.s3_region,
                           s3_endpoint_url=self.s3_endpoint_url, s3_sse=self.s3_sse,
                           s3_kms_key_id=self.s3_kms_key_id, expected_bucket_owner=self.expected_bucket_owner,
                           frames_dir=self.frames_dir,
                           output_dir=self.output_dir, local_cache_dir=self.local_cache_dir,
                           max_cache_bytes=self.max_cache_bytes, no_fallback=True, experiment_name=experiment,
                           device="cpu" if self.device == "cpu" else "auto")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TokenizeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**values)


class TokenizeSession:
    """The heavy objects of one tokenization (storage, tokenizer, manifest), kept between its steps."""

    def __init__(self, config: TokenizeConfig, credentials: S3Credentials | None = None) -> None:
        self.config = config
        self.credentials = credentials
        self.plan: StoragePlan | None = None
        self.tokenizer: Tokenizer | None = None
        self.manifest: pd.DataFrame | None = None
        self._cache: FrameCache | None = None

    def validate(self) -> StoragePlan:
        self.plan = validate_setup(self.config.storage_config(), self.credentials)
        return self.plan

    def load(self) -> dict[str, Any]:
        config = self.config
        storage = self.config.storage_config()
        self.tokenizer = Tokenizer.from_checkpoint(config.checkpoint, region=storage.s3_region,
                                                   endpoint_url=storage.s3_endpoint_url, credentials=self.credentials,
                                                   expected_bucket_owner=storage.expected_bucket_owner,
                                                   device=config.device, bf16=config.bf16,
                                                   batch_size=config.batch_size)
        lineage = self.tokenizer.lineage
        if not lineage.experiment:
            raise ConfigError(f"Checkpoint {config.checkpoint} names no experiment: it is not a pokevq run's")
        log.info("Tokenizer from %s (experiment %s, epoch %s, SHA-256 %s): %dx%d codes of %d", config.checkpoint,
                 lineage.experiment, lineage.epoch, lineage.checkpoint_sha256[:12], *self.tokenizer.grid,
                 self.tokenizer.codebook_size)
        return lineage.to_dict()

    def index(self) -> dict[str, Any]:
        assert self.plan is not None
        storage = self.plan.frames_storage()
        self.manifest = index_frames(storage, self.plan.frames_prefix, val_fraction=0.0, seed=0)
        episodes = self.manifest[["game", "episode"]].drop_duplicates()
        output = self.plan.output_storage()  # the frames this tokenization saw, next to its tokens
        output.put_bytes(self.token_set.manifest_key, to_parquet_bytes(self.manifest.drop(columns=["split"])))
        return {"frames": len(self.manifest), "episodes": len(episodes),
                "frames_uri": storage.uri(self.plan.frames_prefix), "manifest_uri": output.uri(
                    self.token_set.manifest_key)}

    @property
    def token_set(self) -> TokenSet:
        assert self.tokenizer is not None
        return TokenSet(str(self.tokenizer.lineage.experiment), self.tokenizer.lineage.checkpoint_sha256)

    def tokenize(self) -> TokenizeResult:
        assert self.plan is not None and self.tokenizer is not None and self.manifest is not None
        if self._cache is None:
            self._cache = FrameCache(self.config.local_cache_dir, max_items=16,
                                     max_bytes=self.config.max_cache_bytes)
        source = FrameSource(self.plan.frames_storage(), self._cache)
        return tokenize_bucket(self.tokenizer, self.manifest, source, self.plan.output_storage(), self.token_set,
                               batch_size=self.config.batch_size, num_workers=self.config.num_workers,
                               max_cache_bytes=self.config.max_cache_bytes)

    def finish(self, indexed: dict[str, Any]) -> dict[str, Any]:
        """The set's index.parquet and lineage.json."""
        assert self.plan is not None and self.tokenizer is not None
        plan = self.plan
        where = ({"backend": "s3", "bucket": plan.bucket, "region": plan.region, "endpoint_url": plan.endpoint_url}
                 if plan.backend == "s3" else {"backend": "local", "root": plan.frames_root})
        lineage = {**self.tokenizer.lineage.to_dict(), "model": self.tokenizer.model_config.to_dict(),
                   "frames": indexed["frames_uri"], "frames_storage": where, "manifest": indexed["manifest_uri"],
                   "pokevq_version": __version__}
        return write_index(self.plan.output_storage(), self.token_set, lineage)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()

    def __enter__(self) -> TokenizeSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def report_markdown(result: dict[str, Any], written: dict[str, Any], lineage: dict[str, Any]) -> str:
    psnr = result.get("sample_psnr")
    sample = "n/a" if psnr is None else f"{psnr:.2f} dB over {result['sample_frames']} frames"
    return "\n".join([
        f"# Tokens of {lineage.get('experiment')} (checkpoint {str(lineage.get('checkpoint_sha256'))[:12]})",
        "",
        "| | |",
        "|---|---|",
        f"| token set | `{result['token_set']}` |",
        f"| episodes written / already there | {result['episodes_written']} / {result['episodes_skipped']} |",
        f"| frames tokenized | {result['frames']} ({len(result['skipped_frames'])} unreadable, skipped) |",
        f"| speed | {result['frames_per_second']:.1f} frames/s |",
        f"| sample PSNR, decoded tokens against the frames | {sample} |",
        f"| index | `{written['index']}` ({written['episodes']} episodes, {written['frames']} frames) |",
        f"| lineage | `{written['lineage']}` |",
        f"| checkpoint | `{lineage.get('checkpoint_uri')}` (epoch {lineage.get('epoch')}) |",
        "",
    ])
