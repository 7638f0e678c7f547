"""`pokevq upload DIR`: put a folder of frames into the bucket, concurrently (like `aws s3 sync`)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pokevq.config import StorageOptions
from pokevq.data.frames import is_image_key
from pokevq.errors import NoFramesError
from pokevq.gameboy import ANNOTATIONS_NAME
from pokevq.run.validate import bucket_storage
from pokevq.storage import FAST_FAIL

log = logging.getLogger(__name__)


def upload_directory(directory: str | Path, options: StorageOptions, threads: int = 16) -> int:
    """Upload every image file below `directory` to `s3://bucket/<frames_dir>/…`, keeping relative paths.

    The frame annotations `pokevq synth` writes (synth_index.json) go along when present.
    """
    from tqdm.auto import tqdm

    root = Path(directory).expanduser().resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_key(p.relative_to(root).as_posix()))
    if not files:
        raise NoFramesError(f"No frames found under {root}: nothing to upload (expected .png/.jpg files).")
    frames = len(files)
    annotations = root / ANNOTATIONS_NAME  # palettes and dialog boxes of synthetic frames, for the quality metrics
    if annotations.is_file():
        files.append(annotations)
    storage, probe = bucket_storage(options), bucket_storage(options, **FAST_FAIL)
    probe.check_credentials()
    prefix = options.frames_dir.strip("/")
    probe.list_one(prefix)  # endpoint, bucket and permission: fail in seconds
    prefix = f"{prefix}/" if prefix else ""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, tqdm(
        total=len(files), desc="upload", unit="frame", disable=None
    ) as bar:
        futures = [
            pool.submit(storage.put_bytes, prefix + path.relative_to(root).as_posix(), path.read_bytes())
            for path in files
        ]
        for future in futures:
            future.result()
            bar.update(1)
    log.info("Uploaded %d frames%s to %s", frames, " and their annotations" if frames < len(files) else "",
             storage.uri(prefix))
    return frames
