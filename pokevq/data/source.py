"""Frame bytes by (key, etag): the local cache first, then the frame's shard, then its own object."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from pokevq.data.cache import FrameCache
from pokevq.data.shards import ShardIndex
from pokevq.errors import FATAL_STORAGE_ERRORS, ObjectNotFoundError
from pokevq.storage import Storage

log = logging.getLogger(__name__)

_NO_SHARDS = False


class FrameSource:
    """Frame bytes by (key, etag), through the local cache.

    When the frames were packed (`pokevq pack`), a miss reads the frame's bytes from its
    shard by byte range; `shards`
    is looked up next to the frames on first need, or given (a `ShardIndex`, or False for never).
    """

    def __init__(self, storage: Storage, cache: FrameCache, shards: Any = None) -> None:
        self.storage = storage
        self.cache = cache
        self.shards = shards  # None: not looked up yet; False: none; else a ShardIndex
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def shards_for(self, keys: Sequence[str]) -> Any:
        """The shard index covering `keys` (looked up once), or None."""
        if self.shards is None:
            with self._lock:
                if self.shards is None:
                    try:
                        found = ShardIndex.discover(self.storage, keys)
                    except FATAL_STORAGE_ERRORS:
                        raise
                    except Exception as exc:  # noqa: BLE001 - an unreadable index only means no shards
                        log.warning("Ignoring the shard index next to the frames: %s", exc)
                        found = None
                    if found is not None:
                        log.info("Reading frames from %d packed frame(s) in shards under %s", len(found),
                                 self.storage.uri(found.prefix))
                    self.shards = found if found is not None else _NO_SHARDS
        return self.shards or None

    def _fetch(self, key: str, etag: str) -> bytes:
        where = self.shards.locate(key, etag) if self.shards else None
        if where is not None:
            shard, offset, length = where
            try:
                data = self.storage.get_range(shard, offset, offset + length)
                if len(data) == length:
                    return data
            except ObjectNotFoundError:
                pass  # a newer pack replaced that shard: the frame's own object still holds it
        return self.storage.get_bytes(key)

    def read(self, key: str, etag: str, keep: bool = True) -> tuple[bytes, bool]:
        """The frame's bytes and whether they came from the cache.

        `keep=False` leaves a miss out of the cache: a one-off read (seeding the codebook, the baselines) must not
        take the room of what the epochs read.
        """
        if not keep and not self.cache.contains(self.storage.namespace, key, etag):
            return self._fetch(key, etag), False
        fetched = False

        def fetch() -> bytes:
            nonlocal fetched
            fetched = True
            return self._fetch(key, etag)

        data = self.cache.get(self.storage.namespace, key, etag, fetch)
        return data, not fetched
