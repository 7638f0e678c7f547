"""Tokenize every episode of a manifest through the streaming data path, one token file per episode.

Episodes whose file this checkpoint already wrote are skipped (a retry or a rerun continues);
a file is written once, with a conditional put, so nothing already written is overwritten.
Packed buckets are read shard by shard; frames are encoded in batches as they arrive, and an
episode's file is written as soon as its last frame has been read.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import torch

from pokevq.data.reader import BucketReader
from pokevq.data.source import FrameSource
from pokevq.data.streaming import shutdown_workers
from pokevq.errors import PreconditionFailedError
from pokevq.storage import Storage
from pokevq.tokenizer.model import Tokenizer
from pokevq.tokenizer.tokens import TokenSet, episode_bytes, index_bytes

log = logging.getLogger(__name__)

SAMPLE_FRAMES = 32  # frames whose decoded tokens are compared with the originals for the report


@dataclass
class TokenizeResult:
    """What a tokenization did: small and JSON-able, a task's result and the report's figures."""

    token_set: str
    episodes_written: int = 0
    episodes_skipped: int = 0
    frames: int = 0
    skipped_frames: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    frames_per_second: float = 0.0
    sample_psnr: float | None = None
    sample_frames: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def episodes_done(storage: Storage, token_set: TokenSet) -> set[tuple[str, str]]:
    """(game, episode) of every token file this checkpoint already wrote."""
    done = set()
    for info in storage.list(token_set.prefix):
        rest = info.key[len(token_set.prefix):]
        parts = rest.split("/")
        if len(parts) == 2 and parts[1].endswith(".parquet"):
            done.add((parts[0], parts[1][: -len(".parquet")]))
    return done


def tokenize_bucket(tokenizer: Tokenizer, manifest: pd.DataFrame, source: FrameSource, storage: Storage,
                    token_set: TokenSet, *, batch_size: int = 64, num_workers: int | None = None,
                    max_cache_bytes: int | None = None, progress: bool = True) -> TokenizeResult:
    """Write the token file of every episode of `manifest` that `token_set` does not hold yet."""
    from tqdm.auto import tqdm

    result = TokenizeResult(token_set=storage.uri(token_set.prefix))
    todo = _episodes_to_do(manifest, episodes_done(storage, token_set), result)
    if todo.empty:
        return result
    facts = {key: (game, episode, int(frame), str(etag)) for key, game, episode, frame, etag in zip(
        todo["key"], todo["game"].astype(str), todo["episode"].astype(str), todo["frame"], todo["etag"])}
    left = todo.groupby([todo["game"].astype(str), todo["episode"].astype(str)]).size().to_dict()
    rows: dict[tuple[str, str], list[tuple[int, str, str, np.ndarray]]] = {}
    path = BucketReader.decide(todo, source, max_bytes=max_cache_bytes, passes=1)
    pin = tokenizer.device.type == "cuda"
    if num_workers is None:
        num_workers = auto_workers(tokenizer.device)
    loader = path.loader(todo, source, tokenizer.image_size, batch_size=batch_size, seed=0, shuffle=False,
                         num_workers=num_workers, pin_memory=pin)
    loader.set_epoch(1)
    sample_images: list[torch.Tensor] = []
    sample_codes: list[torch.Tensor] = []
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc="tokenize", unit="frame", disable=None if progress else True)
    try:
        for batch in loader:
            finished: list[tuple[str, str]] = []
            for key, reason in batch.skipped:
                result.skipped_frames.append((key, reason))
                log.warning("Skipped frame %s: %s", key, reason)
                finished += _count(facts[key], left)
            images = batch.pixels(tokenizer.device)
            if images is not None:
                codes = tokenizer.encode_images(images)
                for key, code in zip(batch.keys, codes.numpy()):
                    game, episode, frame, etag = facts[key]
                    rows.setdefault((game, episode), []).append((frame, key, etag, code))
                    finished += _count(facts[key], left)
                if len(sample_images) * batch_size < SAMPLE_FRAMES:
                    sample_images.append(images[:SAMPLE_FRAMES].cpu())
                    sample_codes.append(codes[:SAMPLE_FRAMES])
                result.frames += len(batch.keys)
            bar.update(len(batch.keys) + len(batch.skipped))
            for pair in finished:
                result.episodes_written += _write(storage, token_set, tokenizer, pair, rows.pop(pair, []))
    finally:
        bar.close()
        shutdown_workers(loader)
    for pair in list(rows):  # episodes whose frames were not all delivered (never expected): written as they are
        result.episodes_written += _write(storage, token_set, tokenizer, pair, rows.pop(pair))
    result.seconds = round(time.perf_counter() - started, 3)
    result.frames_per_second = round(result.frames / max(result.seconds, 1e-9), 2)
    if sample_images:
        _score_sample(tokenizer, torch.cat(sample_images)[:SAMPLE_FRAMES], torch.cat(sample_codes)[:SAMPLE_FRAMES],
                      result)
    return result


def _episodes_to_do(manifest: pd.DataFrame, done: set[tuple[str, str]], result: TokenizeResult) -> pd.DataFrame:
    """The frames of the episodes not tokenized yet, in episode and frame order (the skipped ones counted)."""
    manifest = manifest.sort_values(["game", "episode", "frame", "key"])
    episode_of = list(zip(manifest["game"].astype(str), manifest["episode"].astype(str)))
    result.episodes_skipped = len(set(episode_of) & done)
    if result.episodes_skipped:
        log.info("%d episode(s) already tokenized with this checkpoint: skipped", result.episodes_skipped)
    return manifest[[pair not in done for pair in episode_of]]


def _score_sample(tokenizer: Tokenizer, images: torch.Tensor, codes: torch.Tensor, result: TokenizeResult) -> None:
    """The PSNR of a sample's frames decoded back from their tokens, as the 8-bit frames a user would see."""
    decoded = tokenizer.decode_images(codes).float()
    originals = (images.float().clamp(0, 1) * 255).round()
    mse = float(((decoded - originals) / 255).pow(2).mean())
    result.sample_psnr = round(10 * float(np.log10(1 / mse)), 3) if mse > 0 else float("inf")
    result.sample_frames = len(images)


def auto_workers(device: torch.device) -> int:
    """Frame-reading processes when none are asked for.

    On the CPU the model and the decoding share the cores: decoding in the process, with the
    shards read ahead on threads, beat 2 worker processes on 2 cores (0.88x against 0.47x the
    forward-only speed, `benchmarks/tokenize.py`). On a GPU the cores only decode: a few workers.
    """
    import os

    return 0 if device.type != "cuda" else max(1, min(8, (os.cpu_count() or 2) - 1))


def _count(fact: tuple[str, str, int, str], left: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    pair = (fact[0], fact[1])
    left[pair] -= 1
    return [pair] if left[pair] == 0 else []


def _write(storage: Storage, token_set: TokenSet, tokenizer: Tokenizer, pair: tuple[str, str],
           rows: list[tuple[int, str, str, np.ndarray]]) -> int:
    if not rows:
        log.warning("Episode %s/%s has no readable frame: no token file", *pair)
        return 0
    data = episode_bytes(pair[0], pair[1], rows, checkpoint_sha256=tokenizer.lineage.checkpoint_sha256,
                         grid=tokenizer.grid, codebook_size=tokenizer.codebook_size)
    key = token_set.episode_key(*pair)
    try:
        storage.put_if_absent(key, data)
    except PreconditionFailedError:
        log.warning("%s was written meanwhile (another run of this checkpoint): kept as it is", storage.uri(key))
        return 0
    return 1


def write_index(storage: Storage, token_set: TokenSet, lineage: dict[str, Any]) -> dict[str, Any]:
    """index.parquet (every episode file of the set, with its frame count) and lineage.json (written once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for info in storage.list(token_set.prefix):
        parts = info.key[len(token_set.prefix):].split("/")
        if len(parts) == 2 and parts[1].endswith(".parquet"):
            meta = pq.read_metadata(pa.BufferReader(storage.get_bytes(info.key)))
            rows.append({"game": parts[0], "episode": parts[1][: -len(".parquet")], "key": info.key,
                         "frames": int(meta.num_rows)})
    storage.put_bytes(token_set.index_key, index_bytes(rows))
    if not storage.exists(token_set.lineage_key):
        stamped = {**lineage, "written_at": datetime.now(UTC).isoformat(timespec="seconds")}
        storage.put_bytes(token_set.lineage_key, (json.dumps(stamped, indent=2) + "\n").encode())
    return {"index": storage.uri(token_set.index_key), "lineage": storage.uri(token_set.lineage_key),
            "episodes": len(rows), "frames": sum(r["frames"] for r in rows)}
