"""Frame bytes by (key, etag) for single reads (previews, the codebook's seed frames): the local frame cache, else
the frame's own object. Training reads units instead (`streaming`)."""

from __future__ import annotations

from pokevq.data.cache import FrameCache
from pokevq.storage import Storage


class FrameSource:
    """The frames' storage and the run's local cache, which also roots the unit store (`<cache dir>/shards/`)."""

    def __init__(self, storage: Storage, cache: FrameCache) -> None:
        self.storage = storage
        self.cache = cache

    def read(self, key: str, etag: str, keep: bool = True) -> tuple[bytes, bool]:
        """The frame's bytes and whether they came from the cache.

        `keep=False` leaves a miss out of the cache: a one-off read (seeding the codebook, the baselines) must not
        take the room of what the epochs read.
        """
        if not keep and not self.cache.contains(self.storage.namespace, key, etag):
            return self.storage.get_bytes(key), False
        fetched = False

        def fetch() -> bytes:
            nonlocal fetched
            fetched = True
            return self.storage.get_bytes(key)

        data = self.cache.get(self.storage.namespace, key, etag, fetch)
        return data, not fetched
