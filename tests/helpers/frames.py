"""Frames into a moto bucket, object by object, as a user's own upload would leave them."""

from __future__ import annotations

from pathlib import Path


def upload_tree(client, bucket: str, root: Path, prefix: str = "pokemon_frames/") -> list[str]:
    """Put every file under `root` at `prefix` + its relative path; returns the keys."""
    keys = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = prefix + path.relative_to(root).as_posix()
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            keys.append(key)
    return keys
