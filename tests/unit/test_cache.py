"""Tests for pokevq.data.cache.FrameCache: LRU, safety of names, atomicity, sharing."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import pickle
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from pokevq.data.cache import CacheStats, FrameCache
from pokevq.errors import CacheDirError

NS = "s3://bucket"


class Fetcher:
    """Counts calls per key; returns deterministic bytes for a key."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, key: str, size: int = 10) -> Callable[[], bytes]:
        def fetch() -> bytes:
            with self._lock:
                self.calls[key] += 1
            return content(key, size)

        return fetch


def content(key: str, size: int = 10) -> bytes:
    unit = f"<{key}>".encode()
    return (unit * (size // len(unit) + 1))[:size]


def frame_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.frame"))


# --- LRU and limits ------------------------------------------------------------


def test_lru_order(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c", max_items=3)
    for k in "abc":
        cache.put(NS, k, "e", content(k))
    fetch = Fetcher()
    assert cache.get(NS, "a", "e", fetch("a")) == content("a")  # a becomes most recent
    cache.put(NS, "d", "e", content("d"))
    assert not cache.contains(NS, "b", "e")
    for k in "acd":
        assert cache.contains(NS, k, "e")
    assert len(cache) == 3
    assert len(frame_files(cache.directory)) == 3
    assert fetch.calls == Counter()


def test_capacity_by_items(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c", max_items=5)
    fetch = Fetcher()
    for i in range(12):
        cache.get(NS, f"k{i}", "e", fetch(f"k{i}"))
    assert len(cache) == 5
    assert len(frame_files(cache.directory)) == 5
    assert [cache.contains(NS, f"k{i}", "e") for i in range(12)] == [False] * 7 + [True] * 5
    assert cache.stats.evictions == 7


def test_capacity_by_bytes(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c", max_items=100, max_bytes=250)
    fetch = Fetcher()
    for i in range(6):
        cache.get(NS, f"k{i}", "e", fetch(f"k{i}", size=100))
    assert cache.total_bytes() <= 250
    assert len(cache) == 2
    assert sum(p.stat().st_size for p in frame_files(cache.directory)) == 200
    assert cache.contains(NS, "k5", "e") and cache.contains(NS, "k4", "e")


def test_item_bigger_than_max_bytes_returned_not_cached(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c", max_items=10, max_bytes=50)
    cache.put(NS, "small", "e", content("small", 40))
    fetch = Fetcher()
    assert cache.get(NS, "big", "e", fetch("big", 51)) == content("big", 51)
    assert cache.get(NS, "big", "e", fetch("big", 51)) == content("big", 51)
    assert fetch.calls["big"] == 2
    assert not cache.contains(NS, "big", "e")
    assert cache.contains(NS, "small", "e")  # nothing evicted for an uncacheable item


def test_stats(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c", max_items=2)
    fetch = Fetcher()
    assert cache.stats.hit_rate() == 0.0
    cache.get(NS, "a", "e", fetch("a", 10))  # miss
    cache.get(NS, "a", "e", fetch("a", 10))  # hit
    cache.get(NS, "b", "e", fetch("b", 20))  # miss
    cache.get(NS, "c", "e", fetch("c", 30))  # miss, evicts a
    cache.get(NS, "c", "e", fetch("c", 30))  # hit
    s = cache.stats
    assert isinstance(s, CacheStats)
    assert (s.hits, s.misses, s.evictions) == (2, 3, 1)
    assert (s.bytes_fetched, s.bytes_served) == (60, 40)
    assert s.hit_rate() == pytest.approx(0.4)
    d = s.as_dict()
    assert d["hits"] == 2 and d["hit_rate"] == pytest.approx(0.4)
    s.hits = 999  # a snapshot: mutating it does not touch the cache
    assert cache.stats.hits == 2


def test_etag_change_refetches(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c")
    fetch = Fetcher()
    cache.get(NS, "k", "v1", fetch("k"))
    cache.get(NS, "k", "v1", fetch("k"))
    assert fetch.calls["k"] == 1
    assert cache.get(NS, "k", "v2", lambda: b"new") == b"new"
    assert cache.get(NS, "k", "v2", fetch("k")) == b"new"
    assert cache.path_for(NS, "k", "v1") != cache.path_for(NS, "k", "v2")
    assert cache.path_for(NS, "k", "v1") != cache.path_for("/local/root", "k", "v1")


def test_invalid_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_cache_size"):
        FrameCache(tmp_path / "c", max_items=0)
    with pytest.raises(ValueError, match="max_bytes"):
        FrameCache(tmp_path / "c", max_bytes=0)


# --- path safety --------------------------------------------------------------

HOSTILE_KEYS = [
    "../../etc/passwd",
    "/abs/key.png",
    "%2e%2e/%2e%2e/x",
    "ünïcödé 日本.png",
    "a b c.png",
    "k" * 1000,
    "..",
    "",
    "a/../../b\\..\\c",
    "\0nul",
    "\udcff-lone-surrogate",
]


def test_hostile_keys_stay_inside(tmp_path: Path) -> None:
    base = tmp_path / "sandbox"
    base.mkdir()
    cache_dir = base / "cache"
    cache = FrameCache(cache_dir, max_items=100)
    walk_root = tmp_path.parent  # '../..' from the cache dir lands two levels above it
    before = {p for p in walk_root.rglob("*")}
    for key in HOSTILE_KEYS:
        for ns in (NS, "../..", "/"):
            path = cache.path_for(ns, key, "../etag")
            assert path.resolve().is_relative_to(cache.directory)
            assert path.name.endswith(".frame") and len(path.name) == 64 + len(".frame")
            data = f"{ns}|{key}".encode("utf-8", "surrogatepass")
            assert cache.get(ns, key, "../etag", lambda d=data: d) == data
            assert cache.get(ns, key, "../etag", lambda: b"WRONG") == data
    created = {p for p in walk_root.rglob("*")} - before
    assert created
    for p in created:
        assert p.resolve().is_relative_to(cache.directory), p
    assert len(frame_files(cache.directory)) == len(HOSTILE_KEYS) * 3


# --- atomicity and failures ----------------------------------------------------


def test_leftover_tmp_removed_and_never_served(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c")
    path = cache.path_for(NS, "k", "e")
    path.parent.mkdir(parents=True)
    leftover = path.parent / f"{path.stem[:8]}-crash.tmp"
    leftover.write_bytes(b"half")
    top_leftover = cache.directory / "x.tmp"
    top_leftover.write_bytes(b"half")
    cache2 = FrameCache(tmp_path / "c")
    assert not leftover.exists() and not top_leftover.exists()
    assert cache2.get(NS, "k", "e", lambda: b"full") == b"full"


def test_interrupted_fetch_caches_nothing(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c")

    def broken() -> bytes:
        raise ConnectionError("reset mid-download")

    with pytest.raises(ConnectionError):
        cache.get(NS, "k", "e", broken)
    assert not cache.contains(NS, "k", "e")
    assert list(cache.directory.rglob("*.tmp")) == []
    fetch = Fetcher()
    assert cache.get(NS, "k", "e", fetch("k")) == content("k")
    assert fetch.calls["k"] == 1


def test_write_failure_degrades_to_pass_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FrameCache(tmp_path / "c")

    def disk_full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    fetch = Fetcher()
    with caplog.at_level(logging.WARNING, logger="pokevq.data.cache"):
        for _ in range(3):
            assert cache.get(NS, "k", "e", fetch("k")) == content("k")
    assert fetch.calls["k"] == 3
    assert len(cache) == 0
    assert list(cache.directory.rglob("*.tmp")) == []  # partial files cleaned up
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    monkeypatch.undo()
    cache.get(NS, "k", "e", fetch("k"))
    assert cache.contains(NS, "k", "e")  # recovers once the disk has room


def test_vanished_file_is_a_miss(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c")
    fetch = Fetcher()
    cache.get(NS, "k", "e", fetch("k"))
    cache.path_for(NS, "k", "e").unlink()  # e.g. evicted by another process
    assert cache.get(NS, "k", "e", fetch("k")) == content("k")
    assert fetch.calls["k"] == 2
    assert cache.stats.misses == 2 and cache.stats.hits == 0


# --- persistence and lifetime ----------------------------------------------------


def test_reuse_serves_hits_and_keeps_lru_order(tmp_path: Path) -> None:
    d = tmp_path / "c"
    first = FrameCache(d, max_items=3)
    for k in "abc":
        first.put(NS, k, "e", content(k))
    first.get(NS, "a", "e", lambda: b"WRONG")  # a most recent: order b, c, a
    first.close()
    assert d.is_dir()  # a user-given directory survives close

    second = FrameCache(d, max_items=3)
    assert len(second) == 3
    fetch = Fetcher()
    for k in "abc":
        assert second.contains(NS, k, "e")
    second.put(NS, "d", "e", content("d"))  # evicts b, the least recently used
    assert not second.contains(NS, "b", "e")
    assert second.get(NS, "a", "e", fetch("a")) == content("a")
    assert second.get(NS, "c", "e", fetch("c")) == content("c")
    assert fetch.calls == Counter()
    assert second.stats.hits == 2


def test_reuse_with_smaller_limit_evicts_oldest(tmp_path: Path) -> None:
    d = tmp_path / "c"
    first = FrameCache(d, max_items=10)
    for k in "abcde":
        first.put(NS, k, "e", content(k))
    second = FrameCache(d, max_items=2)
    assert len(second) == 2
    assert [second.contains(NS, k, "e") for k in "abcde"] == [False, False, False, True, True]


def test_temporary_dir_removed_by_close(tmp_path: Path) -> None:
    cache = FrameCache(max_items=5)
    assert cache.temporary
    d = cache.directory
    cache.put(NS, "k", "e", b"x")
    assert d.is_dir()
    copy = pickle.loads(pickle.dumps(cache))
    copy.close()  # a copy never removes the creator's directory
    assert d.is_dir()
    cache.close()
    assert not d.exists()
    assert cache.get(NS, "k", "e", lambda: b"y") == b"y"  # pass-through after close
    assert not d.exists()
    cache.close()  # idempotent

    with FrameCache() as ctx:
        d2 = ctx.directory
        ctx.put(NS, "k", "e", b"x")
    assert not d2.exists()

    user = FrameCache(tmp_path / "mine")
    assert not user.temporary
    with user:
        user.put(NS, "k", "e", b"x")
    assert (tmp_path / "mine").is_dir()


def test_unwritable_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    with pytest.raises(CacheDirError) as info:
        FrameCache(tmp_path / "afile" / "cache")
    msg = str(info.value)
    assert msg.startswith("Cannot create cache directory")
    assert "--cache-dir" in msg
    with pytest.raises(CacheDirError, match="^Cannot create cache directory"):
        FrameCache(tmp_path / "afile")


def test_unwritable_existing_dir_detected_by_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs even as root: the probe write is what detects a read-only directory.
    import tempfile

    def denied(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    (tmp_path / "ro").mkdir()
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: object, **kwargs: object) -> str:
        path = real_mkdtemp(*args, **kwargs)  # type: ignore[call-overload]
        made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    with pytest.raises(CacheDirError, match="^Cannot create cache directory .*Permission denied"):
        FrameCache(tmp_path / "ro")
    with pytest.raises(CacheDirError, match="^Cannot create cache directory"):
        FrameCache()  # a temporary directory whose probe fails is removed again
    assert len(made) == 1 and not Path(made[0]).exists()


# --- concurrency ----------------------------------------------------------------


def test_threads(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c", max_items=20)
    errors: list[BaseException] = []
    mismatches: list[str] = []

    def worker(seed: int) -> None:
        try:
            for i in range(200):
                key = f"key{(i * 7 + seed * 13) % 50}"
                got = cache.get(NS, key, "e", lambda k=key: content(k, 64))
                if got != content(key, 64):
                    mismatches.append(key)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and mismatches == []
    assert len(cache) <= 20
    assert len(frame_files(cache.directory)) <= 20
    s = cache.stats
    assert s.hits + s.misses == 1600


def test_pickle_round_trip(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c", max_items=10)
    cache.put(NS, "k", "e", b"payload")
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.directory == cache.directory and copy.max_items == 10
    assert copy.get(NS, "k", "e", lambda: b"WRONG") == b"payload"
    assert copy.stats.hits == 1
    assert copy.get(NS, "k2", "e", lambda: b"two") == b"two"
    assert cache.get(NS, "k2", "e", lambda: b"WRONG") == b"two"  # written by the copy


def _insert_many(cache_or_dir: FrameCache | str, tag: str, count: int) -> int:
    cache = cache_or_dir if isinstance(cache_or_dir, FrameCache) else FrameCache(cache_or_dir, 10)
    for i in range(count):
        cache.get(NS, f"{tag}-{i}", "e", lambda i=i: f"{tag}{i}".encode())
    return len(cache)


def test_processes_share_item_bound(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    cache = FrameCache(d, max_items=10)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        # One worker gets a pickled copy (DataLoader style), one opens the dir itself.
        a = pool.apply_async(_insert_many, (cache, "a", 60))
        b = pool.apply_async(_insert_many, (str(d), "b", 60))
        assert a.get(timeout=60) <= 10 and b.get(timeout=60) <= 10
    files = frame_files(d)
    assert len(files) <= 12
    assert not list(d.rglob("*.tmp"))
    assert all(f.read_bytes()[:1] in (b"a", b"b") for f in files)  # only complete writes
    # Without the cross-process re-reads each process would keep its own 10 (20 total).
