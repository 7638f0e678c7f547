"""Loose frames kept on local disk as decoded units, so an unpacked bucket decodes each frame once.

A chunk of loose frames (`plan.LOOSE_CHUNK`, the same chunks every epoch) that a worker reads is
written the first time as one file of frame records (`record`) in the shard cache, named by its
frames' keys and ETags: a frame changed in the bucket changes the name, so a stale unit is never
read. Later epochs read the unit instead of fetching and decoding each frame again. A frame that
does not decode is kept as its own bytes (it is skipped with its reason whenever it is read, as
from the bucket); a chunk with a frame that could not be fetched is not kept.

File: b"PVQU", u32 count, count x u32 lengths, then the records, one after another.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any

from pokevq.data import frames

MAGIC = b"PVQU"
LEVEL = 1  # zstd level: units are written during training, so speed over size
# Decoded units' bytes against the frames' PNG bytes, to decide before training whether they fit the cache:
# measured 0.40 (gameplay synth) and 0.50 (uCity) at the pack's level; a margin for level 1 and odder frames.
BYTES_PER_PNG_BYTE = 0.6
_COUNT = struct.Struct("<4sI")


def unit_name(keys: Sequence[str], etags: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for key, etag in zip(keys, etags):
        digest.update(f"{key}\0{etag}\0".encode("utf-8", "surrogatepass"))
    return f"local-unit/{digest.hexdigest()}"


def to_record(data: bytes) -> bytes:
    """A frame file as a record, or its own bytes when it does not decode."""
    packed = frames.to_record(data, level=LEVEL)
    return data if packed is None else packed


def build(frames: Sequence[bytes]) -> bytes:
    lengths = struct.pack(f"<{len(frames)}I", *(len(f) for f in frames))
    return b"".join([_COUNT.pack(MAGIC, len(frames)), lengths, *frames])


def split(data: Any, count: int) -> list[bytes] | None:
    """The unit's `count` frames, or None when the file is not such a unit (damaged: it is rebuilt)."""
    if len(data) < _COUNT.size:
        return None
    magic, found = _COUNT.unpack_from(data, 0)
    start = _COUNT.size + 4 * found
    if magic != MAGIC or found != count or len(data) < start:
        return None
    lengths = struct.unpack_from(f"<{found}I", data, _COUNT.size)
    if start + sum(lengths) != len(data):
        return None
    out = []
    for length in lengths:
        out.append(bytes(data[start:start + length]))
        start += length
    return out
