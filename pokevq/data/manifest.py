"""The frame manifest: every frame under the prefix, in natural order, split by episode.

Splitting by episode (never by frame) keeps near-identical consecutive frames from
leaking between train and validation.
"""

from __future__ import annotations

import io
import logging
import random
import re
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from pokevq.data.frames import is_image_key
from pokevq.errors import NoFramesError, PokevqError
from pokevq.storage import ListingPage, ObjectInfo, Storage

log = logging.getLogger(__name__)


class ManifestError(PokevqError):
    """A run's saved manifest cannot be read back (a retry, or another machine's training processes)."""


COLUMNS = ["key", "game", "episode", "frame", "size", "etag", "last_modified", "split"]
_NUMBER = re.compile(r"(\d+)")
LIST_THREADS = 8  # concurrent listings of episode folders (each a few pages of 1,000 keys)
SHARDS_DIR = "_shards"  # where `pokevq pack` writes a prefix's shards and their index; never frames


def natural_key(text: str) -> tuple:
    """`frame_2` sorts before `frame_10`."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _NUMBER.split(text))


def _normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def build_manifest(objects: Iterable[ObjectInfo], prefix: str = "") -> pd.DataFrame:
    """A DataFrame of the image objects under `prefix`: key, game, episode, frame, size, etag, last_modified.

    `game` and `episode` are the first two folders below the prefix (game/episode/frame_N.png);
    frames lying directly in a game folder belong to episode "" and those at the top to game "".
    Objects keep their listing order among keys that sort equal.
    """
    prefix = _normalize_prefix(prefix)
    builder = _Builder(prefix)
    page = ListingPage([], [], [], [], [])
    for obj in objects:
        page.keys.append(obj.key)
        page.sizes.append(obj.size)
        page.etags.append(obj.etag)
        page.last_modified.append(obj.last_modified)
        if len(page.keys) >= 1000:
            builder.add(page)
            page = ListingPage([], [], [], [], [])
    builder.add(page)
    return builder.finish(tiebreak_by_key=False)


class _Builder:
    """Turns listing pages into a sorted manifest with little memory per frame.

    Each page becomes a small Arrow record batch at once (no Python object per frame is kept;
    game and episode dictionary-encoded), with a byte string per frame whose byte order is
    `natural_key` order, so the final sort is one Arrow sort instead of 100,000 Python tuples.
    The DataFrame is then built one column at a time, each unsorted column freed as its
    sorted one is made, so the peak stays near the size of the result.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        # Natural order of keys that share a prefix ending in a non-digit is the order of what follows it.
        self.strip = len(prefix) if prefix and not prefix[-1].isdigit() else 0
        self.batches: list[Any] = []
        self.skipped = 0
        self.exact = True  # False when a key holds characters the byte encoding cannot order
        self._lock = threading.Lock()

    def add(self, page: ListingPage) -> None:
        import pyarrow as pa

        prefix, plen, strip = self.prefix, len(self.prefix), self.strip
        keys: list[str] = []
        games: list[str] = []
        episodes: list[str] = []
        frames: list[int] = []
        sizes: list[int] = []
        etags: list[str] = []
        stamps: list[Any] = []
        order: list[bytes] = []
        skipped = 0
        exact = True
        for key, size, etag, stamp in zip(page.keys, page.sizes, page.etags, page.last_modified):
            if not is_image_key(key):
                skipped += 1
                continue
            prefixed = key.startswith(prefix)
            relative = key[plen:] if prefixed else key
            parts = relative.split("/")
            n = len(parts)
            games.append(parts[0] if n >= 2 else "")
            episodes.append((parts[1] if n == 3 else "/".join(parts[1:-1])) if n >= 3 else "")
            numbers = _NUMBER.findall(parts[-1])
            frames.append(int(numbers[-1]) if numbers else -1)
            keys.append(key)
            sizes.append(size)
            etags.append(etag)
            stamps.append(stamp)
            encoded = _natural_bytes(key[strip:]) if prefixed else None
            if encoded is None:
                exact = False
                encoded = b""
            order.append(encoded)
        if not keys and not skipped:
            return
        if stamps and isinstance(stamps[0], str):
            stamp_array = pa.array(stamps, pa.string()).cast(pa.timestamp("ms", tz="UTC"))
        else:
            stamp_array = pa.array([_utc(s) for s in stamps], pa.timestamp("us", tz="UTC"))
        batch = pa.record_batch(
            [
                pa.array(keys, pa.string()),
                pa.array(games, pa.string()).dictionary_encode(),
                pa.array(episodes, pa.string()).dictionary_encode(),
                pa.array(frames, pa.int64()),
                pa.array(sizes, pa.int64()),
                pa.array(etags, pa.string()),
                stamp_array.cast(pa.timestamp("us", tz="UTC")),
                pa.array(order, pa.binary()),
            ],
            names=[*COLUMNS[:-1], "_order"],
        )
        with self._lock:
            self.skipped += skipped
            self.exact = self.exact and exact
            if len(batch):
                self.batches.append(batch)

    def finish(self, tiebreak_by_key: bool) -> pd.DataFrame:
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.skipped:
            log.info("Manifest: skipped %d non-image object(s) (e.g. .DS_Store)", self.skipped)
        if not self.batches:
            frame = pd.DataFrame({name: pd.Series(dtype="object") for name in COLUMNS[:-1]})
            return frame.assign(split=pd.Series(dtype="object"))
        table = pa.Table.from_batches(self.batches)
        self.batches = []
        if self.exact:
            sort_keys = [("_order", "ascending")] + ([("key", "ascending")] if tiebreak_by_key else [])
            indices = pc.sort_indices(table, sort_keys=sort_keys)
        else:  # a key the byte encoding cannot order exactly: the exact (slow) sort
            keys = table.column("key").to_pylist()
            if tiebreak_by_key:
                ranked = sorted(range(len(keys)),
                                key=lambda i: (natural_key(keys[i]), keys[i].encode("utf-8", "surrogatepass")))
            else:
                ranked = sorted(range(len(keys)), key=lambda i: natural_key(keys[i]))
            del keys
            indices = pa.array(ranked, pa.int64())
        table = table.drop_columns(["_order"])
        pool = pa.default_memory_pool()
        pool.release_unused()
        columns: dict[str, Any] = {}
        for name in COLUMNS[:-1]:  # one column at a time: only one unsorted column is copied at once
            column = table.column(name).combine_chunks()  # `take` would concatenate anyway, next to its output
            table = table.drop_columns([name])
            pool.release_unused()  # hand the unsorted chunks back, so the peak stays low
            column = column.take(indices)
            if pa.types.is_dictionary(column.type):
                # game and episode: categorical (a small integer per frame, not a string), in natural order
                column = pd.Categorical.from_codes(
                    column.indices.to_numpy(zero_copy_only=False),
                    pd.Index(column.dictionary.to_pylist(), dtype="str"),
                )
                column = column.reorder_categories(
                    sorted(column.categories, key=lambda name: (natural_key(name), name))
                )
            elif pa.types.is_string(column.type):
                column = column.cast(pa.large_string()).to_pandas()  # pandas' own string storage, no copy
            else:
                column = column.to_pandas()
            columns[name] = column
            pool.release_unused()
        del table, indices
        frame = pd.DataFrame(columns, copy=False)
        del columns
        frame["split"] = "train"
        return frame


def _utc(stamp: Any) -> Any:
    if isinstance(stamp, datetime) and stamp.tzinfo is None:
        return stamp.replace(tzinfo=UTC)
    return stamp


def _natural_bytes(text: str) -> bytes | None:
    """Bytes whose order is the order of `natural_key(text)`; None when the encoding cannot be exact.

    Text parts are lowercased UTF-8 (byte order = code point order) closed by 0x01; numbers are
    a length byte then their digits without leading zeros, so 9 < 10 and 007 == 7.
    """
    lowered = text.lower()  # lowercasing never makes or breaks a run of digits
    if "\x00" in lowered or "\x01" in lowered:
        return None
    parts = _NUMBER.split(lowered)
    out = [parts[0], "\x01"]
    for index in range(1, len(parts), 2):
        run = parts[index]
        digits = (run.lstrip("0") or "0") if run.isascii() else str(int(run))
        if len(digits) > 120:  # the length must stay one byte below 0x80
            return None
        out += (chr(2 + len(digits)), digits, parts[index + 1], "\x01")
    return "".join(out).encode("utf-8", "surrogatepass")


def _walk_listing(storage: Storage, prefix: str, builder: _Builder, threads: int) -> int:
    """List every object under `prefix` into `builder`, game and episode folders concurrently.

    One listing with a delimiter finds the games, one per game finds its episodes, then each
    episode is listed in full (pagination included) on a thread pool: the same objects as one
    paginated listing, with many requests in flight instead of one after another.
    Returns the number of listing calls made (the requests, less extra pages).
    """
    calls = 0

    def level(folder: str) -> list[str]:
        found: list[str] = []
        for page in storage.list_pages(folder, "/"):
            builder.add(page)
            found.extend(p for p in page.prefixes if not p.endswith(f"/{SHARDS_DIR}/") and p != f"{SHARDS_DIR}/")
        return found

    def everything(folder: str) -> None:
        for page in storage.list_pages(folder):
            builder.add(page)

    games = level(prefix)
    calls += 1
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pokevq-list") as pool:
        episodes = [folder for found in pool.map(level, games) for folder in found]
        calls += len(games)
        for _ in pool.map(everything, episodes):
            pass
        calls += len(episodes)
    return calls


def _episode_codes(frame: pd.DataFrame) -> tuple[Any, list[tuple[str, str]]]:
    """One integer per row naming its (game, episode), and the pairs the integers stand for."""
    import numpy as np

    game_codes, games = pd.factorize(frame["game"])
    episode_codes, episodes = pd.factorize(frame["episode"])
    codes = game_codes.astype(np.int64) * max(1, len(episodes)) + episode_codes
    del game_codes, episode_codes
    present = np.unique(codes)
    width = max(1, len(episodes))
    pairs = [(str(games[c // width]), str(episodes[c % width])) for c in present.tolist()]
    return codes, list(zip(present.tolist(), pairs))  # type: ignore[return-value]


def episode_ids(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Distinct (game, episode) pairs in natural order."""
    if frame.empty:
        return []
    _, pairs = _episode_codes(frame)
    return sorted((pair for _, pair in pairs), key=_episode_order)


def _episode_order(pair: tuple[str, str]) -> tuple:
    """Natural order; pairs that differ only in case or leading zeros fall back to their spelling."""
    return (natural_key(pair[0]), natural_key(pair[1]), pair)


def split_by_episode(frame: pd.DataFrame, val_fraction: float, seed: int = 0) -> pd.DataFrame:
    """Mark whole episodes as `val`: deterministic for a seed, and at least one when there are two or more."""
    return _assign_split(frame.copy(), val_fraction, seed)


def _assign_split(frame: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """`split_by_episode` in place (a 100,000-frame manifest is not copied)."""
    import numpy as np

    if frame.empty:
        frame["split"] = "train"
        return frame
    codes, pairs = _episode_codes(frame)
    episodes = sorted((pair for _, pair in pairs), key=_episode_order)
    chosen: set[tuple[str, str]] = set()
    if len(episodes) >= 2 and val_fraction > 0:
        count = max(1, round(len(episodes) * val_fraction))
        count = min(count, len(episodes) - 1)
        chosen = set(random.Random(seed).sample(episodes, count))
    chosen_codes = np.array([code for code, pair in pairs if pair in chosen], dtype=np.int64)
    is_val = np.isin(codes, chosen_codes)
    del codes
    frame["split"] = pd.array(np.where(is_val, "val", "train"), dtype="str")
    return frame


def index_frames(
    storage: Storage, prefix: str, val_fraction: float = 0.1, seed: int = 0, *, threads: int = LIST_THREADS
) -> pd.DataFrame:
    """List, filter, sort and split every frame under a prefix; refuse an empty prefix.

    Stores that list page by page (S3) are listed game and episode folder at a time on
    `threads` threads; the result is the same as one sequential listing.
    """
    prefix = _normalize_prefix(prefix)
    if type(storage).list_pages is not Storage.list_pages:
        builder = _Builder(prefix)
        _walk_listing(storage, prefix, builder, threads)
        frame = builder.finish(tiebreak_by_key=True)
    else:
        frame = build_manifest(storage.list(prefix), prefix)
    if frame.empty:
        raise NoFramesError(
            f"No frames found under {storage.uri(prefix)}: upload .png/.jpg frames there "
            "(pokevq upload DIR, or aws s3 sync) or point --frames-dir at them."
        )
    frame = _assign_split(frame, val_fraction, seed)
    log.info(
        "Indexed %d frames in %d episodes under %s (%d train, %d val)",
        len(frame),
        len(episode_ids(frame)),
        storage.uri(prefix),
        int((frame["split"] == "train").sum()),
        int((frame["split"] == "val").sum()),
    )
    return frame


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def from_parquet_bytes(data: bytes, uri: str = "the manifest") -> pd.DataFrame:
    """A manifest saved by `to_parquet_bytes`; one line naming `uri` when it is not one."""
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - whatever the bytes are, the user's problem is the same
        raise ManifestError(f"{uri} is not a readable manifest ({type(exc).__name__}): start a new run (a new flow "
                            "run of the deployment) instead of retrying this one") from exc
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        raise ManifestError(f"{uri} is not a pokevq manifest (no {', '.join(missing)} column): start a new run (a "
                            "new flow run of the deployment) instead of retrying this one")
    return frame


def summarize(frame: pd.DataFrame) -> dict:
    """Small, JSON-able facts about a manifest: what a task returns instead of the DataFrame."""
    return {
        "frames": int(len(frame)),
        "episodes": len(episode_ids(frame)),
        "games": int(frame["game"].nunique()) if len(frame) else 0,
        "train_frames": int((frame["split"] == "train").sum()),
        "val_frames": int((frame["split"] == "val").sum()),
        "train_episodes": len(episode_ids(frame[frame["split"] == "train"])),
        "val_episodes": len(episode_ids(frame[frame["split"] == "val"])),
        "bytes": int(frame["size"].sum()) if len(frame) else 0,
    }
