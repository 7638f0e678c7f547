"""`pokevq decode`: an episode's token file back to PNG frames and an animated GIF, with the PSNR against the
original frames when they can be read."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pokevq.data.frames import decode_frame_uint8
from pokevq.errors import ConfigError, FrameDecodeError, ObjectNotFoundError, StorageError
from pokevq.storage import LocalStorage, S3Storage, Storage, storage_for_uri
from pokevq.tokenizer.model import Tokenizer
from pokevq.tokenizer.tokens import read_token_file

log = logging.getLogger(__name__)

GIF_FRAME_MS = 100


def decode_token_file(uri: str, out: Path, *, checkpoint: str | None = None, region: str | None = None,
                      endpoint_url: str | None = None, expected_bucket_owner: str | None = None) -> dict[str, Any]:
    """Write `out/frame_<n>.png` for every row and `out/episode.gif`; PSNR against the originals when reachable."""
    owner = {"expected_bucket_owner": expected_bucket_owner}  # every bucket it reads, as `train` checks its own
    if uri.startswith("s3://"):
        storage, key = storage_for_uri(uri, region=region or "us-east-1", endpoint_url=endpoint_url, **owner)
    else:  # a local token set: the store is the folder that holds tokens/<experiment>/<sha>/
        path = Path(uri).expanduser().resolve()
        depth = min(3, len(path.parts) - 1)
        storage, key = LocalStorage(path.parents[depth - 1]), "/".join(path.parts[-depth:])
    try:
        data = storage.get_bytes(key)
    except ObjectNotFoundError as exc:
        raise ConfigError(f"Token file not found: {uri}") from exc
    lineage = _lineage(storage, key)
    source = checkpoint or (lineage or {}).get("checkpoint_uri")
    if not source:
        raise ConfigError(f"No lineage.json next to {uri} names its checkpoint: pass --checkpoint")
    tokens = read_token_file(data, uri, expect_sha256=(lineage or {}).get("checkpoint_sha256") if not checkpoint
                             else None)
    tokenizer = Tokenizer.from_checkpoint(source, region=region, endpoint_url=endpoint_url, **owner)
    if tokenizer.lineage.checkpoint_sha256 != tokens.checkpoint_sha256:
        raise ConfigError(f"{uri} was written by checkpoint {tokens.checkpoint_sha256[:12]}, not by {source} "
                          f"({tokenizer.lineage.checkpoint_sha256[:12]}): decode it with its own checkpoint")
    frames = tokenizer.decode(tokens.codes)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out} is not a folder pokevq can write ({exc.strerror or exc}): pick a new folder") \
            from exc
    existing = [p.name for p in out.iterdir() if p.name.startswith("frame_") or p.name == "episode.gif"]
    if existing:
        raise ConfigError(f"{out} already holds decoded frames ({existing[0]}, ...): pick a new --out, nothing "
                          "already written is replaced")
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    for number, image in zip(tokens.frames.tolist(), images):
        image.save(out / f"frame_{number:05d}.png")
    if images:
        images[0].save(out / "episode.gif", save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0)
    psnr, compared, why = _psnr(frames, tokens.keys, tokenizer.image_size, lineage, region, endpoint_url, owner)
    return {"frames": len(images), "out": str(out), "gif": str(out / "episode.gif") if images else None,
            "psnr": psnr, "compared": compared, "psnr_unavailable": why, "game": tokens.game,
            "episode": tokens.episode}


def _lineage(storage: Storage, key: str) -> dict[str, Any] | None:
    """The token set's lineage.json: two folders up from <game>/<episode>.parquet."""
    parts = key.split("/")
    if len(parts) < 3:
        return None
    try:
        value = json.loads(storage.get_bytes("/".join(parts[:-2] + ["lineage.json"])))
    except (ObjectNotFoundError, StorageError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _psnr(frames: np.ndarray, keys: list[str], size: tuple[int, int], lineage: dict[str, Any] | None,
          region: str | None, endpoint_url: str | None,
          owner: dict[str, str | None]) -> tuple[float | None, int, str | None]:
    where = (lineage or {}).get("frames_storage") or {}
    try:
        if where.get("backend") == "s3":
            store: Storage = S3Storage(str(where["bucket"]), region=region or where.get("region") or "us-east-1",
                                       endpoint_url=endpoint_url or where.get("endpoint_url"), **owner)
        elif where.get("backend") == "local":
            store = LocalStorage(str(where["root"]))
        else:
            return None, 0, "the token set's lineage names no frames storage"
        originals = np.stack([decode_frame_uint8(store.get_bytes(key), size) for key in keys])
    except (StorageError, FrameDecodeError, KeyError, OSError, ValueError) as exc:
        return None, 0, f"original frames not readable ({str(exc).splitlines()[0][:200]})"
    mse = float((((frames.astype(np.float64) - originals.astype(np.float64)) / 255.0) ** 2).mean())
    return (float("inf") if mse == 0 else round(10 * float(np.log10(1 / mse)), 3)), len(keys), None
