"""What a training process trains from, built the same way by rank 0's session and by every follower rank.

The frame cache and source, the run's manifest, the frames' annotations and how the bucket is read
(`BucketReader`): each made once, when first needed, from the run's config and storage plan, and
the trainer built from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pokevq.config import TrainConfig
from pokevq.data.annotations import load_annotations
from pokevq.data.cache import FrameCache
from pokevq.data.manifest import from_parquet_bytes
from pokevq.data.reader import BucketReader
from pokevq.data.source import FrameSource
from pokevq.layout import Layout
from pokevq.run.validate import StoragePlan
from pokevq.train.trainer import Trainer


class RunInputs:
    """One rank's view of a run's data; `trainer()` builds the same trainer on every rank."""

    def __init__(self, config: TrainConfig, plan: StoragePlan) -> None:
        self.config, self.plan = config, plan
        self.layout = Layout.for_config(config)
        self.storage = plan.output_storage()
        self.frames_storage = plan.frames_storage()
        self._cache: FrameCache | None = None
        self._manifest: pd.DataFrame | None = None
        self._annotations: dict[str, Any] | None = None
        self._reader: BucketReader | None = None

    @property
    def cache(self) -> FrameCache:
        if self._cache is None:
            self._cache = FrameCache(self.config.storage.local_cache_dir, max_items=self.config.storage.max_cache_size,
                                     max_bytes=self.config.storage.max_cache_bytes)
        return self._cache

    @property
    def source(self) -> FrameSource:
        return FrameSource(self.frames_storage, self.cache)

    @property
    def manifest(self) -> pd.DataFrame:
        """The run's manifest: the one this process indexed, else the one saved in storage."""
        if self._manifest is None:
            self._manifest = from_parquet_bytes(self.storage.get_bytes(self.layout.manifest),
                                                self.storage.uri(self.layout.manifest))
        return self._manifest

    @manifest.setter
    def manifest(self, manifest: pd.DataFrame) -> None:
        self._manifest, self._reader = manifest, None

    @property
    def annotations(self) -> dict[str, Any]:
        """Palettes and dialog boxes of the frames when they came with them (pokevq synth), else {}."""
        if self._annotations is None:
            self._annotations = load_annotations(self.frames_storage, self.plan.frames_prefix)
        return self._annotations

    @property
    def reader(self) -> BucketReader:
        """How this bucket's frames are read (decided once, before training; a cache below one shard fails here)."""
        if self._reader is None:
            limit = self.config.storage.max_cache_bytes
            self._reader = BucketReader.decide(self.manifest, self.source, max_bytes=limit)
        return self._reader

    def trainer(self, workdir: str | Path, **options: Any) -> Trainer:
        """The run's trainer over these inputs; `options`: resume or warm-start state, callbacks (rank 0's)."""
        return Trainer(self.config, self.manifest, self.source, workdir, annotations=self.annotations,
                       reader=self.reader, **options)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
