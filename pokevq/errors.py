"""User-facing errors: one line that says what went wrong and what to do.

Every error the pipeline can hit on bad input is a subclass of `PokevqError`;
the CLI and the flow catch that once and show the message without a traceback.
"""

from __future__ import annotations


class PokevqError(Exception):
    """An error whose message is meant for the user, not a bug."""


class ConfigError(PokevqError, ValueError):
    """An option has an invalid value; the message names the option."""


class StorageError(PokevqError):
    """S3 or local storage could not be used."""


class PreconditionFailedError(StorageError):
    """A conditional write found the object other than expected: another writer got there first."""


class CredentialsNotFoundError(StorageError):
    """No AWS credentials anywhere in boto3's chain."""


class InvalidCredentialsError(StorageError):
    """Credentials exist but S3 rejects them."""


class AccessDeniedError(StorageError):
    """Credentials are valid but lack a permission."""


class BucketNotFoundError(StorageError):
    """The bucket does not exist."""


class ConnectError(StorageError):
    """The S3 endpoint cannot be reached."""


class ObjectNotFoundError(StorageError):
    """A key does not exist in the storage."""


class RunStoppedError(PokevqError):
    """The run was told to stop (SIGTERM) and stopped at a step boundary, with a checkpoint to continue from."""


class OutputDirError(PokevqError):
    """A file under the output directory cannot be written (a full disk, say)."""


class CacheDirError(PokevqError):
    """The local cache directory cannot be created or written."""


class NoFramesError(PokevqError):
    """The frames prefix or folder holds no image files."""


class FrameDecodeError(PokevqError):
    """A frame could not be decoded; the dataset skips and counts it."""


class CheckpointError(PokevqError):
    """A checkpoint cannot be used (corrupt, wrong model shape, newer format)."""


class CheckpointNotFoundError(CheckpointError):
    """The checkpoint to resume from does not exist."""


# Errors that mean "the store is unusable", which no amount of skipping frames fixes.
FATAL_STORAGE_ERRORS = (ConnectError, CredentialsNotFoundError, InvalidCredentialsError, AccessDeniedError)
