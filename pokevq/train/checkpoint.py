"""The checkpoint: one typed class (`Checkpoint`) builds, writes and reads it; on disk a `torch.save` dict.

A checkpoint from a bucket is untrusted input, so loading never unpickles arbitrary objects
(`weights_only=True`), and every way it can be unusable gets a one-line `CheckpointError`.

Format 2 holds every field, always (`position` is None outside an epoch). Format 1 (pokevq before
format 2) left out `rng`, `position`, `run_id` and `skipped` when it had none: it is migrated on load.
A pokevq that knows format 1 only refuses format 2 in one line ("newer than this pokevq supports").
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from pokevq.errors import CheckpointError
from pokevq.model.vqvae import saved_model_fields

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
REQUIRED_KEYS = ("format_version", "model", "optimizer", "epoch", "global_step", "config", "model_config", "metrics")
# Model fields that decide parameter shapes: a mismatch makes a checkpoint unloadable.
SHAPE_FIELDS = (
    "architecture", "quantizer", "in_channels", "hidden_channels", "codebook_size", "embedding_dim", "downsample",
    "num_res_blocks", "code_dim", "encoder_kernel",
)


class CheckpointCorruptError(CheckpointError):
    """A checkpoint's bytes are damaged: unreadable, or not the bytes whose SHA-256 was recorded at upload.

    Resuming from `checkpoint_latest.pt` falls back to the newest good epoch checkpoint on this error.
    """


def rng_state() -> dict[str, Any]:
    """RNG states as plain tensors and lists, so `weights_only=True` can load them."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Checkpoint(Mapping):
    """Everything a run saves: the model, the optimizer, where training stands, and what the run has seen.

    Read it by attribute; `checkpoint["epoch"]` also works (a read-only mapping of the saved dict's keys).
    """

    model: dict[str, Any]
    optimizer: dict[str, Any]
    epoch: int  # the last complete epoch
    global_step: int
    config: dict[str, Any]  # the run's TrainConfig, secrets masked
    model_config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    position: dict[str, Any] | None = None  # how far the next epoch got (a mid-epoch checkpoint)
    run_id: str = ""  # the orchestrator's run that wrote a mid-epoch checkpoint (a retry of it continues)
    skipped: dict[str, str] = field(default_factory=dict)  # frames skipped so far: key -> reason

    _TYPES = {"epoch": int, "global_step": int, "config": dict, "model_config": dict, "metrics": dict,
              "history": list, "rng": dict, "run_id": str, "skipped": dict, "model": dict, "optimizer": dict}

    # ---------------------------------------------------------------- mapping
    def __getitem__(self, key: str) -> Any:
        if key == "format_version":
            return FORMAT_VERSION
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(("format_version", *self._names()))

    def __len__(self) -> int:
        return 1 + len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    # ------------------------------------------------------------------- disk
    def to_state(self) -> dict[str, Any]:
        """The dict written to disk (format 2: every field)."""
        return {"format_version": FORMAT_VERSION, **{name: getattr(self, name) for name in self._names()}}

    @classmethod
    def from_state(cls, state: Any, name: str) -> Checkpoint:
        """A loaded dict as a checkpoint, format 1 migrated; one line for anything it cannot be."""
        if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
            missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
            raise CheckpointError(f"Checkpoint {name} is not a pokevq checkpoint (missing {', '.join(missing)})")
        version = state["format_version"]
        if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION or version < 1:
            raise CheckpointError(
                f"Checkpoint {name} has format version {version}, newer than this pokevq supports "
                f"({FORMAT_VERSION}): upgrade pokevq to load it."
            )
        values = {key: state[key] for key in cls._names() if state.get(key) is not None}
        if version == 1:  # fields format 1 left out when empty
            values.setdefault("history", list(state.get("history") or []))
            values.setdefault("skipped", dict(state.get("skipped") or {}))
        for key, kind in cls._TYPES.items():
            value = values.get(key)
            if key in values and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                raise CheckpointError(f"Checkpoint {name} is not a valid pokevq checkpoint: {key} is "
                                      f"{type(values[key]).__name__}, not {kind.__name__}")
        for key in ("best", "position"):
            if values.get(key) is not None and not isinstance(values[key], dict):
                raise CheckpointError(f"Checkpoint {name} is not a valid pokevq checkpoint: {key} is "
                                      f"{type(values[key]).__name__}, not a dict")
        return cls(**values)

    def save(self, path: str | Path) -> str:
        """Write atomically and return the file's SHA-256."""
        return save_checkpoint(self.to_state(), path)

    @classmethod
    def load(cls, source: str | Path | bytes, name: str | None = None) -> Checkpoint:
        return load_checkpoint(source, name)


def build_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    global_step: int,
    config: dict[str, Any],
    model_config: dict[str, Any],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    best: dict[str, Any] | None,
    position: dict[str, Any] | None = None,
    run_id: str = "",
    skipped: dict[str, str] | None = None,
) -> Checkpoint:
    """The run's state now, with this process's random state."""
    return Checkpoint(model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch,
                      global_step=global_step, config=config, model_config=model_config, metrics=metrics,
                      history=history, best=best, rng=rng_state(), position=position, run_id=run_id,
                      skipped=dict(skipped or {}))


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> str:
    """Write atomically (temp file + rename) and return the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state.to_state() if isinstance(state, Checkpoint) else dict(state), buffer)
    data = buffer.getvalue()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(
            f"Cannot write checkpoint {path}: {exc.strerror or exc}. Free disk space or pass another --output-dir."
        ) from exc
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(source: str | Path | bytes, name: str | None = None) -> Checkpoint:
    """Load and check a checkpoint without ever running code from it (format 1 is migrated)."""
    name = name or str(source if not isinstance(source, bytes) else "<bytes>")
    handle: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        state = torch.load(handle, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"Checkpoint not found: {name}") from exc
    except Exception as exc:  # noqa: BLE001 - every unpickling failure means "not a usable checkpoint"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it contains Python objects that are not allowed in a checkpoint (refused for safety)"
            raise CheckpointError(f"Checkpoint {name} is not a valid pokevq checkpoint: {reason[:300]}") from exc
        raise CheckpointCorruptError(f"Checkpoint {name} is not a valid pokevq checkpoint: {reason[:300]}") from exc
    return Checkpoint.from_state(state, name)


def model_shape_differences(state: Mapping[str, Any], model_config: dict[str, Any]) -> list[str]:
    """`field=saved (configured value)` for every shape field where a checkpoint differs from the model."""
    saved = state.get("model_config", {})
    if isinstance(saved, dict):
        saved = saved_model_fields(saved)  # fields a checkpoint predates, as it was trained
    return [
        f"{field}={saved.get(field)!r} (configured {model_config.get(field)!r})"
        for field in SHAPE_FIELDS
        if field in saved and saved.get(field) != model_config.get(field)
    ]


def check_model_shape(state: Mapping[str, Any], model_config: dict[str, Any], name: str) -> None:
    """Refuse a checkpoint whose model shape differs, naming every differing field."""
    different = model_shape_differences(state, model_config)
    if different:
        raise CheckpointError(
            f"Checkpoint {name} does not match the configured model: {', '.join(different)}. "
            "Pass the checkpoint's model options or start a new experiment without --resume."
        )


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str | None, name: str) -> None:
    """Refuse a downloaded checkpoint whose bytes are not the ones whose SHA-256 was recorded at upload."""
    if not expected:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise CheckpointCorruptError(
            f"Checkpoint {name} is corrupt: its SHA-256 is {actual[:16]}…, but {expected[:16]}… was recorded "
            f"when it was uploaded ({Path(path).stat().st_size} bytes: a partial or altered object). "
            "Resume from another checkpoint_epoch_N.pt of the experiment."
        )
