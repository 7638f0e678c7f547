"""One tokenization of a bucket: its options (`TokenizeConfig`) and what it keeps between steps.

The `pokevq-tokenize` flow runs the steps as tasks: validate storage → load the tokenizer →
index the frames → tokenize the episodes → write the index, the lineage and the report.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from pokevq.data.cache import FrameCache
from pokevq.data.manifest import index_frames, to_parquet_bytes
from pokevq.data.source import FrameSource
from pokevq.errors import ConfigError
from pokevq.run.validate import StoragePlan, validate_setup
from pokevq.storage import S3Credentials
from pokevq.tokenizer.bucket import TokenizeResult, tokenize_bucket, write_index
from pokevq.tokenizer.model import Tokenizer
from pokevq.tokenizer.options import TokenizeConfig
from pokevq.tokenizer.tokens import TokenSet
from pokevq.version import __version__

log = logging.getLogger(__name__)


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
        self.plan = validate_setup(self.config.storage, "tokens", self.credentials)
        return self.plan

    def load(self) -> dict[str, Any]:
        config, storage = self.config.tokenize, self.config.storage
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
            self._cache = FrameCache(self.config.storage.local_cache_dir, max_items=16,
                                     max_bytes=self.config.storage.max_cache_bytes)
        source = FrameSource(self.plan.frames_storage(), self._cache)
        return tokenize_bucket(self.tokenizer, self.manifest, source, self.plan.output_storage(), self.token_set,
                               batch_size=self.config.tokenize.batch_size,
                               num_workers=self.config.tokenize.num_workers,
                               max_cache_bytes=self.config.storage.max_cache_bytes)

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
