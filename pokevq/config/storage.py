"""Where frames are read and outputs written: the bucket, its security, local folders and the cache.

Every command that reads or writes a bucket takes these options (a subset where it writes nothing),
so encryption and the expected owner work the same on `train`, `tokenize`, `upload` and `pack`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pokevq.config.options import Sectioned, fail, option, section, settle, whole
from pokevq.settings import aws_endpoint_url, aws_region, s3_bucket_name

S3_SSE_MODES = ("AES256", "aws:kms")
# What a command that only reads a bucket takes, and what one that also writes adds.
BUCKET_READ_OPTIONS = ("s3_region", "s3_endpoint_url", "expected_bucket_owner")
BUCKET_WRITE_OPTIONS = ("s3_bucket", *BUCKET_READ_OPTIONS, "s3_sse", "s3_kms_key_id")


@section
@dataclass(frozen=True)
class StorageOptions:
    """The guide's S3 and cache options; the environment's defaults are read once, here."""

    use_s3: bool = option(False, "Read frames from S3 and write outputs there.")
    s3_bucket: str | None = option(None, "S3 bucket name (default: $S3_BUCKET_NAME).")
    s3_region: str | None = option(None, "AWS region (default: $AWS_REGION, else us-east-1).")
    s3_endpoint_url: str | None = option(
        None,
        "S3 endpoint for MinIO, R2 or a local server (default: $AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL, else "
        "AWS).",
    )
    s3_checkpoint_prefix: str = option("checkpoints", "S3 prefix for checkpoints.")
    s3_tensorboard_prefix: str = option("tensorboard", "S3 prefix for TensorBoard logs.")
    s3_logs_prefix: str = option("logs", "S3 prefix for training logs.")
    s3_sse: str | None = option(
        None, "Server-side encryption of every object written: AES256 or aws:kms (default: the bucket's).",
    )
    s3_kms_key_id: str | None = option(
        None, "KMS key id or ARN for --s3-sse aws:kms (default: the aws/s3 managed key).",
    )
    expected_bucket_owner: str | None = option(
        None, "12-digit AWS account id that must own the bucket; every S3 request is refused otherwise.",
    )
    no_fallback: bool = option(False, "Fail instead of falling back to local storage when S3 setup fails.")
    frames_dir: str = option("pokemon_frames", "S3 prefix of the frames (a local folder without --use-s3).")
    output_dir: str = option("./outputs", "Root of local outputs.")
    local_cache_dir: str | None = option(
        None, "Local frame cache directory, kept between runs (default: a temp dir removed at exit).",
        flag="--cache-dir",
    )
    max_cache_size: int = option(1000, "Max images to cache locally.")
    max_cache_bytes: int | None = option(
        None,
        "Optional byte limit of the local cache, e.g. 20GB (the streaming path's shard files included; default for "
        "those: 8 GiB, at most half the free disk).",
        parse="size",
    )

    def __post_init__(self) -> None:
        settle(self, "s3_bucket", self.s3_bucket or s3_bucket_name() or None)
        settle(self, "s3_region", self.s3_region or aws_region() or "us-east-1")
        settle(self, "s3_endpoint_url", self.s3_endpoint_url or aws_endpoint_url())
        self._check_prefixes()
        self._check_security()
        if not whole(self.max_cache_size, 1):
            fail("max_cache_size", f"must be a positive integer; got {self.max_cache_size!r}")
        if self.max_cache_bytes is not None and not whole(self.max_cache_bytes, 1):
            fail("max_cache_bytes", f"must be a positive integer; got {self.max_cache_bytes!r}")
        if self.use_s3:
            from pokevq.storage.addresses import check_endpoint_and_region

            check_endpoint_and_region(self.s3_endpoint_url, self.s3_region)

    def _check_prefixes(self) -> None:
        for name in ("s3_checkpoint_prefix", "s3_tensorboard_prefix", "s3_logs_prefix"):
            value = str(getattr(self, name)).strip("/")
            if not value or ".." in value.split("/"):
                fail(name, f"must be a non-empty prefix without '..'; got {getattr(self, name)!r}")
            settle(self, name, value)
        if self.use_s3 and self.frames_dir.strip("/") and ".." in self.frames_dir.split("/"):
            fail("frames_dir", f"must not contain '..'; got {self.frames_dir!r}")

    def _check_security(self) -> None:
        if self.s3_sse is not None and self.s3_sse not in S3_SSE_MODES:
            fail("s3_sse", f"must be one of {', '.join(S3_SSE_MODES)}; got {self.s3_sse!r}")
        kms_key = self.s3_kms_key_id
        if kms_key is not None and (not isinstance(kms_key, str) or not kms_key.strip()):
            fail("s3_kms_key_id", f"must be a KMS key id or ARN; got {self.s3_kms_key_id!r}")
        if self.s3_kms_key_id is not None and self.s3_sse != "aws:kms":
            fail("s3_kms_key_id", f"is only used with --s3-sse aws:kms; got s3_sse={self.s3_sse!r}")
        owner = self.expected_bucket_owner
        if owner is not None and not (isinstance(owner, str) and re.fullmatch(r"\d{12}", owner)):
            fail("expected_bucket_owner", f"must be a 12-digit AWS account id; got {owner!r}")

    def security(self) -> dict[str, Any]:
        """What every S3 request of the run carries: encryption of what it writes, the bucket's expected owner."""
        return dict(sse=self.s3_sse, kms_key_id=self.s3_kms_key_id, expected_bucket_owner=self.expected_bucket_owner)


class BucketConfig(Sectioned):
    """What `upload` and `pack` take: the bucket, its security and the frames' prefix."""

    SECTIONS = {"storage": (StorageOptions, (*BUCKET_WRITE_OPTIONS, "frames_dir"))}
    FIXED = {"use_s3": True}
    storage: StorageOptions


class BucketReadConfig(Sectioned):
    """What `decode` and `export` take to read a checkpoint or a token file from a bucket."""

    SECTIONS = {"storage": (StorageOptions, BUCKET_READ_OPTIONS)}
    storage: StorageOptions
