"""The frame manifest: every frame under the prefix, in natural order, split by episode.

Splitting by episode (never by frame) keeps near-identical consecutive frames from
leaking between train and validation.
"""

from __future__ import annotations

import io
import logging
import random
import re
from typing import Iterable

import pandas as pd

from pokevq.errors import NoFramesError
from pokevq.frames import is_image_key
from pokevq.storage import ObjectInfo, Storage

log = logging.getLogger(__name__)

COLUMNS = ["key", "game", "episode", "frame", "size", "etag", "last_modified", "split"]
_NUMBER = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple:
    """`frame_2` sorts before `frame_10`."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _NUMBER.split(text))


def _frame_number(name: str) -> int:
    numbers = _NUMBER.findall(name)
    return int(numbers[-1]) if numbers else -1


def _normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def build_manifest(objects: Iterable[ObjectInfo], prefix: str = "") -> pd.DataFrame:
    """A DataFrame of the image objects under `prefix`: key, game, episode, frame, size, etag, last_modified.

    `game` and `episode` are the first two folders below the prefix (the guide's layout);
    frames lying directly in a game folder belong to episode "" and those at the top to game "".
    """
    prefix = _normalize_prefix(prefix)
    rows = []
    skipped = 0
    for obj in objects:
        if not is_image_key(obj.key):
            skipped += 1
            continue
        relative = obj.key[len(prefix):] if obj.key.startswith(prefix) else obj.key
        parts = relative.split("/")
        folders, name = parts[:-1], parts[-1]
        game = folders[0] if len(folders) >= 1 else ""
        episode = "/".join(folders[1:]) if len(folders) >= 2 else ""
        rows.append((obj.key, game, episode, _frame_number(name), obj.size, obj.etag, obj.last_modified))
    if skipped:
        log.info("Manifest: skipped %d non-image object(s) (e.g. .DS_Store)", skipped)
    frame = pd.DataFrame(rows, columns=COLUMNS[:-1])
    if frame.empty:
        return frame.assign(split=pd.Series(dtype="object"))
    order = sorted(range(len(frame)), key=lambda i: natural_key(frame.at[i, "key"]))
    frame = frame.iloc[order].reset_index(drop=True)
    frame["last_modified"] = pd.to_datetime(frame["last_modified"], utc=True)
    frame["split"] = "train"
    return frame


def episode_ids(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Distinct (game, episode) pairs in natural order."""
    pairs = {(g, e) for g, e in zip(frame["game"], frame["episode"])}
    return sorted(pairs, key=lambda p: (natural_key(p[0]), natural_key(p[1])))


def split_by_episode(frame: pd.DataFrame, val_fraction: float, seed: int = 0) -> pd.DataFrame:
    """Mark whole episodes as `val`: deterministic for a seed, and at least one when there are two or more."""
    frame = frame.copy()
    frame["split"] = "train"
    episodes = episode_ids(frame)
    if len(episodes) < 2 or val_fraction <= 0:
        return frame
    count = max(1, round(len(episodes) * val_fraction))
    count = min(count, len(episodes) - 1)
    chosen = set(random.Random(seed).sample(episodes, count))
    is_val = [(g, e) in chosen for g, e in zip(frame["game"], frame["episode"])]
    frame.loc[is_val, "split"] = "val"
    return frame


def index_frames(storage: Storage, prefix: str, val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """List, filter, sort and split every frame under a prefix; refuse an empty prefix."""
    prefix = _normalize_prefix(prefix)
    frame = build_manifest(storage.list(prefix), prefix)
    if frame.empty:
        raise NoFramesError(
            f"No frames found under {storage.uri(prefix)}: upload .png/.jpg frames there "
            "(pokevq upload DIR, or aws s3 sync) or point --frames-dir at them."
        )
    frame = split_by_episode(frame, val_fraction, seed)
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


def from_parquet_bytes(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


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
