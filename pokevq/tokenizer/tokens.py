"""Token files: one Parquet file per episode, under a token set named by the checkpoint that wrote it.

    tokens/<experiment>/<checkpoint sha256[:12]>/<game>/<episode>.parquet   frame, key, etag, codes
    tokens/<experiment>/<checkpoint sha256[:12]>/index.parquet               one row per episode file
    tokens/<experiment>/<checkpoint sha256[:12]>/lineage.json                checkpoint, model, manifest, version
    tokens/<experiment>/<checkpoint sha256[:12]>/manifest.parquet            the frames it tokenized

A file's Parquet metadata (`pokevq`) names its checkpoint's SHA-256, grid and codebook size, so
a file can be checked on its own: reading never trusts what a file says without checking it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from pokevq.errors import PokevqError

TOKENS_PREFIX = "tokens"
FORMAT = "pokevq-tokens/1"
METADATA_KEY = b"pokevq"
MAX_TOKEN_FILE_BYTES = 1 << 30


class TokenFileError(PokevqError):
    """A token file that is not what it must be: corrupt, hostile, or written by another checkpoint."""


@dataclass(frozen=True)
class TokenSet:
    """Where one checkpoint's tokens of one experiment live."""

    experiment: str
    checkpoint_sha256: str

    @property
    def prefix(self) -> str:
        return f"{TOKENS_PREFIX}/{self.experiment}/{self.checkpoint_sha256[:12]}/"

    def episode_key(self, game: str, episode: str) -> str:
        return f"{self.prefix}{game}/{episode}.parquet"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}index.parquet"

    @property
    def lineage_key(self) -> str:
        return f"{self.prefix}lineage.json"

    @property
    def manifest_key(self) -> str:
        """The frames of the latest tokenization into this set (key, game, episode, frame, size, ETag)."""
        return f"{self.prefix}manifest.parquet"


@dataclass
class TokenFile:
    """One episode's tokens, checked."""

    game: str
    episode: str
    frames: np.ndarray  # int64 frame numbers
    keys: list[str]
    etags: list[str]
    codes: np.ndarray  # (N, h, w) int64
    checkpoint_sha256: str
    codebook_size: int


def episode_bytes(game: str, episode: str, rows: list[tuple[int, str, str, np.ndarray]], *, checkpoint_sha256: str,
                  grid: tuple[int, int], codebook_size: int) -> bytes:
    """A Parquet file of (frame number, key, ETag, codes) rows, in frame order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda row: (row[0], row[1]))
    meta = {"format": FORMAT, "game": game, "episode": episode, "checkpoint_sha256": checkpoint_sha256,
            "grid": list(grid), "codebook_size": int(codebook_size)}
    table = pa.table({
        "frame": pa.array([int(r[0]) for r in rows], pa.int64()),
        "key": pa.array([r[1] for r in rows], pa.string()),
        "etag": pa.array([r[2] for r in rows], pa.string()),
        "codes": pa.array([np.asarray(r[3], dtype=np.int32).reshape(-1) for r in rows], pa.list_(pa.int32())),
    }).replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def read_token_file(data: bytes, name: str, *, expect_sha256: str | None = None) -> TokenFile:
    """Parse and check one token file; anything wrong is one `TokenFileError` line naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def fail(reason: str) -> TokenFileError:
        return TokenFileError(f"{name} is not a usable pokevq token file: {reason}")

    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise fail(f"it is {len(data)} bytes, more than a token file can be")
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise fail(f"unreadable Parquet ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") \
            from exc
    try:
        meta = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    except ValueError as exc:
        raise fail("its pokevq metadata is not JSON") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise fail(f"no {FORMAT} metadata")
    try:
        grid = (int(meta["grid"][0]), int(meta["grid"][1]))
        codebook_size = int(meta["codebook_size"])
        sha = str(meta["checkpoint_sha256"])
        game, episode = str(meta["game"]), str(meta["episode"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise fail(f"incomplete metadata ({exc})") from exc
    if not (0 < grid[0] <= 4096 and 0 < grid[1] <= 4096 and 0 < codebook_size <= 1 << 31):
        raise fail(f"impossible grid {grid} or codebook size {codebook_size}")
    if expect_sha256 is not None and sha != expect_sha256:
        raise TokenFileError(f"{name} was written by checkpoint {sha[:12]}, not by {expect_sha256[:12]}: decode it "
                             "with the checkpoint named in its token set's lineage.json")
    expected = {"frame": pa.int64(), "key": pa.string(), "etag": pa.string(), "codes": pa.list_(pa.int32())}
    for column, kind in expected.items():
        if column not in table.column_names or table.schema.field(column).type != kind:
            raise fail(f"column {column!r} missing or not {kind}")
    codes_column = table.column("codes").combine_chunks()
    lengths = np.diff(np.asarray(codes_column.offsets))
    if len(lengths) and (lengths != grid[0] * grid[1]).any():
        raise fail(f"a row's codes are not {grid[0]}x{grid[1]}")
    if codes_column.null_count or table.column("key").null_count:
        raise fail("missing values")
    codes = np.asarray(codes_column.flatten(), dtype=np.int64).reshape(-1, *grid)
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise fail(f"codes out of range 0..{codebook_size - 1}")
    return TokenFile(game, episode, np.asarray(table.column("frame"), dtype=np.int64),
                     table.column("key").to_pylist(), table.column("etag").to_pylist(), codes, sha, codebook_size)


def index_bytes(rows: list[dict[str, Any]]) -> bytes:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["game", "episode", "key", "frames"]).sort_values(["game", "episode"])
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
