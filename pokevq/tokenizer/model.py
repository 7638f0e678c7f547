"""`Tokenizer`: a trained pokevq model as frames → codes → frames, with where it came from.

Loaded from a checkpoint (verified against its SHA-256 and loaded with `weights_only=True`,
as a resume is) or from an exported directory (safetensors and JSON: no pickle at all).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pokevq.data.frames import image_to_rgb, resize_rgb
from pokevq.errors import CheckpointError, ConfigError, ObjectNotFoundError, PokevqError
from pokevq.model.vqvae import VQVAE, ModelConfig, saved_model_fields

DEFAULT_BATCH = 64
EXPORT_FORMAT = "pokevq-tokenizer/1"  # config.json's format of an exported tokenizer (pokevq.tokenizer.export)


class TokenizerInputError(PokevqError):
    """Frames or codes a tokenizer cannot take: the message says what it expected."""


@dataclass
class Lineage:
    """Where a tokenizer's weights came from: written next to every token set and exported model."""

    checkpoint_uri: str
    checkpoint_sha256: str
    experiment: str | None = None
    epoch: int | None = None
    global_step: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint_uri": self.checkpoint_uri, "checkpoint_sha256": self.checkpoint_sha256,
                "experiment": self.experiment, "epoch": self.epoch, "global_step": self.global_step,
                "metrics": self.metrics}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Lineage:
        return cls(str(values["checkpoint_uri"]), str(values["checkpoint_sha256"]), values.get("experiment"),
                   values.get("epoch"), values.get("global_step"), dict(values.get("metrics") or {}))


class Tokenizer:
    """Encode frames to integer codes and decode codes to frames, batched, in inference mode."""

    def __init__(self, model: VQVAE, lineage: Lineage, *, device: str | torch.device = "auto", bf16: bool = False,
                 batch_size: int = DEFAULT_BATCH) -> None:
        self.device = _device(device)
        if bf16 and self.device.type != "cuda":
            raise ConfigError("bf16 (--bf16) tokenization is for CUDA; on this device it runs in fp32 (leave --bf16 "
                              "off)")
        self.model = model.to(self.device).eval()
        self.lineage = lineage
        self.bf16 = bf16
        self.batch_size = batch_size

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, uri: str | Path, *, region: str | None = None, endpoint_url: str | None = None,
                        credentials: Any = None, expected_bucket_owner: str | None = None,
                        **options: Any) -> Tokenizer:
        """A checkpoint at `s3://bucket/key` or a local path, checked against its recorded SHA-256."""
        from pokevq.run.resume import fetch_checkpoint
        from pokevq.storage import storage_for_uri

        text = str(uri)
        storage, key = storage_for_uri(text, region=region or "us-east-1", endpoint_url=endpoint_url,
                                       credentials=credentials, expected_bucket_owner=expected_bucket_owner)
        with tempfile.TemporaryDirectory(prefix="pokevq-tokenizer-") as directory:
            target = Path(directory) / "checkpoint.pt"
            try:
                state, _ = fetch_checkpoint(storage, key, target)
            except ObjectNotFoundError as exc:
                raise CheckpointError(f"Checkpoint not found: {text}") from exc
            digest = hashlib.sha256(target.read_bytes()).hexdigest()
        return cls.from_state(state, Lineage(
            checkpoint_uri=text, checkpoint_sha256=digest, experiment=state.config.get("experiment_name"),
            epoch=state.epoch, global_step=state.global_step, metrics=_plain(state.metrics),
        ), **options)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], lineage: Lineage, **options: Any) -> Tokenizer:
        saved = state.get("model_config")
        if not isinstance(saved, dict):
            raise CheckpointError(f"Checkpoint {lineage.checkpoint_uri} has no model configuration")
        config = model_config_from(saved, lineage.checkpoint_uri)
        model = VQVAE(config)
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"Checkpoint {lineage.checkpoint_uri} does not match its own model "
                                  f"configuration: {first[:300]}") from exc
        return cls(model, lineage, **options)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **options: Any) -> Tokenizer:
        """An exported tokenizer (`pokevq export`): model.safetensors and config.json, no pickle."""
        model, lineage = load_exported(Path(directory))
        return cls(model, lineage, **options)

    # --------------------------------------------------------------- properties
    @property
    def model_config(self) -> ModelConfig:
        return self.model.config

    @property
    def codebook_size(self) -> int:
        return int(self.model.config.codebook_size)

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) codes per frame."""
        return tuple(self.model.config.latent_size)  # type: ignore[return-value]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.model.config.image_size)  # type: ignore[return-value]

    # ---------------------------------------------------------------- encode
    def encode(self, frames: Any) -> torch.Tensor:
        """Codes (B, h, w) int64 of `frames`: uint8 (B, H, W, 3), a list of PIL images, or floats (B, 3, H, W).

        Floats are in [0, 1] at the model's size; uint8 arrays and PIL images of another size are
        resized as training resized frames.
        """
        images = self.as_images(frames)
        out = [self.encode_images(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, *self.grid, dtype=torch.long)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Codes of one batch of float images (B, 3, H, W) in [0, 1], on the CPU."""
        images = images.to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model.encode(images).cpu()

    def as_images(self, frames: Any) -> torch.Tensor:
        """Float (B, 3, H, W) in [0, 1] at the model's size, from any of the inputs `encode` takes."""
        h, w = self.image_size
        if isinstance(frames, torch.Tensor) and frames.is_floating_point():
            if frames.dim() != 4 or tuple(frames.shape[1:]) != (3, h, w):
                raise TokenizerInputError(f"float frames must be (B, 3, {h}, {w}) in [0, 1] for this tokenizer; "
                                          f"got {tuple(frames.shape)}")
            return frames.float()
        if isinstance(frames, torch.Tensor):
            frames = frames.numpy()
        if isinstance(frames, np.ndarray):
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise TokenizerInputError(f"frames must be uint8 (B, H, W, 3); got {frames.dtype} "
                                          f"{tuple(frames.shape)}")
            arrays: Sequence[np.ndarray] = list(frames)
        elif isinstance(frames, (list, tuple)):
            arrays = [_pil_rgb(image) for image in frames]
        else:
            raise TokenizerInputError(f"frames must be a uint8 array, a list of PIL images or a float tensor; got "
                                      f"{type(frames).__name__}")
        resized = np.stack([resize_rgb(a, (h, w)) for a in arrays]) if arrays else np.zeros((0, h, w, 3), np.uint8)
        return torch.from_numpy(np.ascontiguousarray(resized.transpose(0, 3, 1, 2))).float().div_(255.0)

    # ---------------------------------------------------------------- decode
    def decode(self, codes: Any) -> np.ndarray:
        """uint8 frames (B, H, W, 3) of codes (B, h, w)."""
        codes = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
        if codes.dim() != 3 or tuple(codes.shape[1:]) != self.grid:
            raise TokenizerInputError(f"codes must be (B, {self.grid[0]}, {self.grid[1]}) for this tokenizer; "
                                      f"got {tuple(codes.shape)}")
        if codes.is_floating_point() or codes.dtype == torch.bool:
            raise TokenizerInputError(f"codes must be integers; got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise TokenizerInputError(f"codes must be in 0..{self.codebook_size - 1} for this tokenizer's codebook; "
                                      f"got {int(codes.min())}..{int(codes.max())}")
        out = [self.decode_images(codes[i:i + self.batch_size]) for i in range(0, len(codes), self.batch_size)]
        if not out:
            return np.zeros((0, *self.image_size, 3), dtype=np.uint8)
        return torch.cat(out).permute(0, 2, 3, 1).numpy()

    @torch.inference_mode()
    def decode_images(self, codes: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) on the CPU, rounded as a PNG writer rounds."""
        codes = codes.to(self.device, dtype=torch.long)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            images = self.model.decode_codes(codes)
        return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def load_exported(directory: Path) -> tuple[VQVAE, Lineage]:
    """The model and lineage of an exported tokenizer; every way it can be unusable is one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        config = json.loads((directory / "config.json").read_text())
        if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
            raise ValueError(f"format is {config.get('format') if isinstance(config, dict) else None!r}, not "
                             f"{EXPORT_FORMAT!r}")
        lineage = Lineage.from_dict(config["lineage"])
        model = VQVAE(model_config_from(config["model"], str(directory)))
        state = load_file(str(directory / "model.safetensors"))
        model.load_state_dict(state)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{directory} is not an exported pokevq tokenizer: {Path(exc.filename).name} "
                              "is missing (write one with `pokevq export`)") from exc
    except (ValueError, KeyError, TypeError, RuntimeError, SafetensorError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{directory} is not a usable exported pokevq tokenizer: {first[:300]}") from exc
    return model, lineage


def model_config_from(saved: dict[str, Any], name: str) -> ModelConfig:
    try:
        return ModelConfig.from_dict(saved_model_fields(dict(saved)))
    except (TypeError, ValueError, KeyError, ConfigError) as exc:
        raise CheckpointError(f"Checkpoint {name} has a model configuration this pokevq cannot build: "
                              f"{str(exc)[:300]}") from exc


def _device(name: str | torch.device) -> torch.device:
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was requested but no CUDA GPU is available; use auto or cpu")
    return device


def _pil_rgb(image: Any) -> np.ndarray:
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TokenizerInputError(f"a list of frames must hold PIL images; got {type(image).__name__}")
    return image_to_rgb(image)


def _plain(value: Any) -> Any:
    """JSON-able copy of checkpoint metrics (numbers, strings, nested dicts and lists)."""
    return json.loads(json.dumps(value, default=lambda v: float(v) if hasattr(v, "__float__") else str(v)))
