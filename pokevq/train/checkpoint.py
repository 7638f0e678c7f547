"""The checkpoint format: one `torch.save` dict, always loaded with `weights_only=True`.

A checkpoint from a bucket is untrusted input, so loading never unpickles arbitrary
objects, and every way it can be unusable gets a one-line `CheckpointError`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from pokevq.errors import CheckpointError
from pokevq.model.vqvae import saved_model_fields

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
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
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "global_step": global_step,
        "config": config,
        "model_config": model_config,
        "metrics": metrics,
        "history": history,
        "best": best,
        "rng": rng_state(),
    }


def save_checkpoint(state: dict[str, Any], path: str | Path) -> str:
    """Write atomically (temp file + rename) and return the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
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


def load_checkpoint(source: str | Path | bytes, name: str | None = None) -> dict[str, Any]:
    """Load and sanity-check a checkpoint without ever running code from it."""
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
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
        raise CheckpointError(f"Checkpoint {name} is not a pokevq checkpoint (missing {', '.join(missing)})")
    version = state["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {name} has format version {version}, newer than this pokevq supports "
            f"({FORMAT_VERSION}): upgrade pokevq to load it."
        )
    return state


def model_shape_differences(state: dict[str, Any], model_config: dict[str, Any]) -> list[str]:
    """`field=saved (configured value)` for every shape field where a checkpoint differs from the model."""
    saved = state.get("model_config", {})
    if isinstance(saved, dict):
        saved = saved_model_fields(saved)  # fields a checkpoint predates, as it was trained
    return [
        f"{field}={saved.get(field)!r} (configured {model_config.get(field)!r})"
        for field in SHAPE_FIELDS
        if field in saved and saved.get(field) != model_config.get(field)
    ]


def check_model_shape(state: dict[str, Any], model_config: dict[str, Any], name: str) -> None:
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
