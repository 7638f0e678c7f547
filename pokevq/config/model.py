"""The tokenizer's shape: what `ModelConfig` is built from, checked by the model's own rules."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pokevq.config.options import fail, option, section, settle
from pokevq.config.values import DEFAULT_IMAGE_SIZE, parse_image_size
from pokevq.model.options import check_model


@section
@dataclass(frozen=True)
class ModelOptions:
    image_size: str = option(DEFAULT_IMAGE_SIZE, "Frame size HxW fed to the model (Game Boy: 144x160).",
                             metavar="HxW")
    hidden_channels: int = option(128, "Channels of the encoder/decoder (patch: of the decoder's context).")
    codebook_size: int = option(65536, "Number of codebook vectors (65,536: 16 bits per token).")
    embedding_dim: int = option(64, "Dimension of each codebook vector (tile and conv).")
    downsample: int = option(8, "Spatial downsampling factor: 4, 8 or 16.")
    architecture: str = option(
        "patch",
        "patch (codes are pixel patches seeded from the training frames at every offset, a decoder that "
        "corrects from neighbouring codes), tile (a learned encoder per patch, convolutions on the code grid) "
        "or conv.",
    )
    quantizer: str = option(
        "ema",
        "ema (EMA codebook), vq (codebook learned by gradient) or fsq (finite scalar quantization); tile and conv.",
    )
    codebook_init: str = option("kmeans", "Codebook initialisation on the first batch: kmeans, data or random (tile "
                                          "and conv).")
    dead_code_restart: str = option(
        "worst",
        "Restart unused codes on the worst-represented latents (worst), random latents, or off (tile and conv).",
    )
    code_dim: int = option(0, "Look codes up in a learned projection of this many dimensions (0: embedding_dim).")
    cosine_codes: bool = option(False, "Look codes up by cosine similarity (l2-normalised codes).", model="cosine")
    encoder_kernel: int = option(
        1,
        "Encoder kernel on the tile grid: 1 (a code from its own tile's pixels) or 3 (a code also sees the tiles "
        "around it).",
    )
    num_res_blocks: int = option(
        2, "Residual blocks at each end of the encoder and decoder (0: none): depth for frames a small model blurs.",
    )

    def __post_init__(self) -> None:
        height, width = parse_image_size(self.image_size)
        settle(self, "image_size", f"{height}x{width}")
        check_model(self.model_options(), lambda name, message: fail(_OPTION_OF.get(name, name), message))

    @property
    def image_hw(self) -> tuple[int, int]:
        return parse_image_size(self.image_size)

    def model_options(self) -> dict[str, Any]:
        """The options as `ModelConfig` names them (image size as (H, W)): the model is built from these."""
        options = {f.metadata.get("model") or f.name: getattr(self, f.name) for f in fields(self)}
        options["image_size"] = self.image_hw
        return options


_OPTION_OF = {f.metadata["model"]: f.name for f in fields(ModelOptions) if f.metadata.get("model")}
