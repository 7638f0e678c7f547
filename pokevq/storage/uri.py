"""Which store and key a URI points at: `s3://bucket/key` or a local path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pokevq.errors import (
    ConfigError,
)
from pokevq.storage.base import Storage
from pokevq.storage.local import LocalStorage
from pokevq.storage.s3 import S3Storage, parse_s3_uri


def storage_for_uri(
    uri: str, *, region: str = "us-east-1", endpoint_url: str | None = None, **client_options: Any
) -> tuple[Storage, str]:
    """The store and key an `s3://…` URI or a local path points at (used by --resume)."""
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        if not key:
            raise ConfigError(f"S3 URI names no object: {uri!r}")
        return S3Storage(bucket, region=region, endpoint_url=endpoint_url, **client_options), key
    path = Path(uri).expanduser().resolve()
    return LocalStorage(path.parent), path.name
