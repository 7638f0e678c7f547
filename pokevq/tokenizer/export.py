"""`pokevq export`: a tokenizer as files anyone can load without pickle.

- `model.safetensors`: the weights and the codebook (buffers included);
- `config.json`: the model options and the lineage;
- `README.md`: a model card (data, metrics, lineage, how to load);
- optionally `tokenizer.torchscript.pt` (`encode`/`decode` for use without pokevq), checked to
  give the same codes as the checkpoint before it is kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pokevq.errors import CheckpointError, ConfigError
from pokevq.model.vqvae import VQVAE
from pokevq.tokenizer.model import EXPORT_FORMAT as FORMAT
from pokevq.tokenizer.model import Tokenizer

FILES = ("model.safetensors", "config.json", "README.md")
EXPORT_FORMATS = ("safetensors", "torchscript")


def export_tokenizer(tokenizer: Tokenizer, out: Path, formats: tuple[str, ...] = ("safetensors",)) -> list[Path]:
    """Write the tokenizer under `out` (a new or empty directory: nothing there is overwritten)."""
    from safetensors.torch import save_file

    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}; got {', '.join(unknown)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: export into a new directory (nothing already written is replaced)")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().cpu().contiguous() for name, value in tokenizer.model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": FORMAT})
    config = {"format": FORMAT, "model": tokenizer.model_config.to_dict(), "lineage": tokenizer.lineage.to_dict()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "README.md").write_text(model_card(tokenizer))
    written = [out / name for name in FILES]
    if "torchscript" in formats:
        written.append(_torchscript(tokenizer, out / "tokenizer.torchscript.pt"))
    return written


class _Scripted(torch.nn.Module):
    """encode: float (B,3,H,W) in [0,1] -> codes (B,h,w); decode: codes -> float frames in [0,1]."""

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.model = model

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.model.patch:  # the nearest-patch search alone: it finds a seen patch's own code, as the hash does
            return self.model.patch_codes_by_search(images)
        return self.model.quantizer.lookup(self.model.encoder(images))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if self.model.patch:
            return self.model.decode_codes(codes)
        return torch.sigmoid(self.model.decoder(self.model.quantizer.embed(codes)).float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)


def _torchscript(tokenizer: Tokenizer, path: Path) -> Path:
    model = VQVAE(tokenizer.model_config)
    model.load_state_dict(tokenizer.model.state_dict())
    if model.patch:
        model.quantizer.build_index()
    wrapper = _Scripted(model.eval())
    h, w = tokenizer.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, h, w, generator=generator)
    codes = tokenizer.encode(images)
    with torch.no_grad():
        traced = torch.jit.trace_module(wrapper, {"encode": images[:2], "decode": codes[:2]})
        again = traced.encode(images)
    if not torch.equal(again, codes):
        raise CheckpointError("The TorchScript export gives other codes than the checkpoint; not written")
    traced.save(str(path))
    return path


def model_card(tokenizer: Tokenizer) -> str:
    lineage = tokenizer.lineage
    config = tokenizer.model_config
    val = (lineage.metrics or {}).get("val") or {}
    rows = [f"| {name} | {_figure(val[name], name)} |" for name in
            ("psnr", "pixel_accuracy", "dialog_accuracy", "token_stability", "codebook_usage", "perplexity")
            if isinstance(val.get(name), (int, float))]
    return "\n".join([
        f"# pokevq tokenizer: {lineage.experiment or 'unnamed experiment'}, epoch {lineage.epoch}",
        "",
        "A VQ-VAE that turns Game Boy frames into a grid of discrete codes and back, trained with pokevq.",
        "",
        "## Model",
        "",
        f"- frames {config.image_size[0]}x{config.image_size[1]} RGB -> codes {tokenizer.grid[0]}x{tokenizer.grid[1]} "
        f"from a codebook of {config.codebook_size} ({config.quantizer} quantizer, {config.architecture} "
        f"architecture, downsample {config.downsample}, {config.hidden_channels} channels)",
        "",
        "## Data and metrics",
        "",
        f"Trained as experiment `{lineage.experiment}` to epoch {lineage.epoch} (step {lineage.global_step}). "
        "Validation figures of that epoch:",
        "",
        "| metric | value |",
        "|---|---|",
        *(rows or ["| (none recorded) | |"]),
        "",
        "## Lineage",
        "",
        f"- checkpoint: `{lineage.checkpoint_uri}`",
        f"- SHA-256: `{lineage.checkpoint_sha256}`",
        "",
        "## Load",
        "",
        "```python",
        "from pokevq import Tokenizer",
        "tok = Tokenizer.from_pretrained('THIS_DIRECTORY')   # safetensors + JSON, no pickle",
        "codes = tok.encode(frames)      # uint8 (B, H, W, 3) -> int64 (B, h, w)",
        "frames = tok.decode(codes)      # -> uint8 (B, H, W, 3)",
        "```",
        "",
        "Without pokevq: `model.safetensors` holds the weights (`safetensors.torch.load_file`); with",
        "`--format torchscript`, `torch.jit.load('tokenizer.torchscript.pt')` has `encode` (float frames in [0, 1],",
        "(B, 3, H, W)) and `decode`.",
        "",
    ])


def _figure(value: Any, name: str) -> str:
    if name in ("pixel_accuracy", "dialog_accuracy", "token_stability", "codebook_usage"):
        return f"{100 * float(value):.2f} %"
    if name == "psnr":
        return f"{float(value):.2f} dB"
    return f"{float(value):.1f}"
