"""Decode any frame file's bytes into a training tensor.

Frames come from buckets we do not control, so every failure (empty file,
text named ``.png``, truncated upload, decompression bomb, odd colour mode)
becomes a `FrameDecodeError` with a one-line reason the dataset can count
and skip, never a crash or a silent wrong image.
"""

from __future__ import annotations

import io
import logging
import re
import warnings

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from pokevq.data import record
from pokevq.errors import FrameDecodeError

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 4096 * 4096  # refuse larger (decompression bombs); checked locally
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")

# Truncated files must fail loudly rather than decode as half-grey frames:
# that needs Pillow's default ImageFile.LOAD_TRUNCATED_IMAGES = False, which
# this module relies on and never changes (_open warns if someone else did).

_SEP = re.compile(r"[\\/]")
_JUNK_SEGMENTS = frozenset({"__MACOSX"})


def is_image_key(key: str) -> bool:
    """Whether a storage key names a frame: by extension, skipping OS junk.

    Rejects directory markers (``.../``), dot-files (``.DS_Store``, AppleDouble
    ``._frame_001.png``), ``Thumbs.db`` and anything under ``__MACOSX/``.
    """
    if not key or key.endswith(("/", "\\")):
        return False
    parts = _SEP.split(key)
    base = parts[-1]
    if not base or base.startswith("."):
        return False
    if any(p in _JUNK_SEGMENTS for p in parts[:-1]):
        return False
    return base.lower().endswith(IMAGE_EXTENSIONS)


def _check_size(image_size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from exc
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return h, w


_truncated_warned = False


def _warn_truncated_once() -> None:
    global _truncated_warned
    if not _truncated_warned:
        _truncated_warned = True
        log.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set elsewhere); "
            "truncated frames may decode as partly grey instead of being skipped"
        )


def _too_large(w: int, h: int) -> FrameDecodeError:
    return FrameDecodeError(
        f"image too large: {w}x{h} pixels (limit {MAX_IMAGE_PIXELS} pixels); "
        "possible decompression bomb"
    )


def _open(data: bytes, target_hw: tuple[int, int]) -> Image.Image:
    """Open, bound and fully load the first frame; map every failure to a reason."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        _warn_truncated_once()
    with warnings.catch_warnings():
        # Pillow warns (then errors) on huge images; make both a decode error.
        # Note: catch_warnings mutates process-global state (Python < 3.14).
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise FrameDecodeError(f"image too large: {exc}") from exc
        except UnidentifiedImageError as exc:
            head = bytes(data[:8])
            raise FrameDecodeError(f"not an image (unrecognised header {head!r})") from exc
        except Exception as exc:  # noqa: BLE001 - any plugin failure is bad input
            raise FrameDecodeError(f"truncated or corrupt image ({exc})") from exc

        w, h = img.size
        if w < 1 or h < 1:
            raise FrameDecodeError(f"truncated or corrupt image (size {w}x{h})")
        if w * h > MAX_IMAGE_PIXELS:  # before load(): no pixel memory allocated yet
            raise _too_large(w, h)
        try:
            img.seek(0)  # animated GIF/APNG/WebP: first frame only
            th, tw = target_hw
            if img.format == "JPEG" and w >= 2 * tw and h >= 2 * th:
                # DCT-domain downscale: bounded memory and time for huge JPEGs.
                img.draft("RGB", (tw, th))
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise FrameDecodeError(f"image too large: {exc}") from exc
        except MemoryError as exc:
            raise FrameDecodeError("image too large: out of memory while decoding") from exc
        except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, EOFError, ...
            raise FrameDecodeError(f"truncated or corrupt image ({exc})") from exc
    return img


def _composite_black(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 -> RGB composited over black: transparent pixels become black."""
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgb * alpha + 127) // 255).astype(np.uint8)


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 with correct range scaling.

    Alpha is composited over black (fully transparent -> black, opaque
    unchanged) so palette images with a transparent index decode
    deterministically. 16-bit greyscale keeps its high byte (65535 -> 255;
    Pillow's own convert clips instead). Mode ``I`` is treated as 16-bit
    range, mode ``F`` as 0..255 (Pillow's convention); both are clipped.
    """
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img)
    if mode in ("L", "1", "CMYK", "YCbCr", "RGBX", "LAB", "HSV"):
        try:
            return np.asarray(img.convert("RGB"))
        except ValueError as exc:
            raise FrameDecodeError(f"unsupported image mode {mode} ({exc})") from exc
    if mode.startswith("I;16"):
        # np.asarray honours the byte order (I;16B -> '>u2').
        grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "I":
        grey = (np.clip(np.asarray(img), 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0)
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P" and "transparency" not in img.info:
        return np.asarray(img.convert("RGB"))
    # RGBA, LA, PA, P with transparency, RGBa, La and anything else: via RGBA.
    try:
        rgba = np.asarray(img if mode == "RGBA" else img.convert("RGBA"))
    except ValueError as exc:
        raise FrameDecodeError(f"unsupported image mode {mode} ({exc})") from exc
    return _composite_black(rgba)


def _resample_for(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Image.Resampling:
    """NEAREST for exact integer upscales (crisp pixel art), BOX to shrink, else BILINEAR."""
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if dh >= sh and dw >= sw and dh % sh == 0 and dw % sw == 0:
        return Image.Resampling.NEAREST
    if dh <= sh and dw <= sw:
        return Image.Resampling.BOX
    return Image.Resampling.BILINEAR


def _decode_rgb(data: bytes, image_size: tuple[int, int]) -> np.ndarray:
    """Shared decode path; the result may be a read-only view."""
    if not data:
        raise FrameDecodeError("empty file")
    th, tw = _check_size(image_size)
    if record.is_record(data):  # a frame packed decoded (`pokevq pack`)
        return resize_rgb(record.decode(data).to_rgb(), (th, tw))
    return resize_rgb(_file_rgb(data, (th, tw)), (th, tw))


def _file_rgb(data: bytes, target_hw: tuple[int, int]) -> np.ndarray:
    """A frame file's pixels at its own size (a large JPEG drafted towards `target_hw`)."""
    img = _open(data, target_hw)
    try:
        return _to_rgb_array(img)
    except FrameDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - conversion of a malformed image
        raise FrameDecodeError(f"truncated or corrupt image ({exc})") from exc
    finally:
        img.close()


def resize_rgb(arr: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """An (h, w, 3) uint8 frame at `image_size` (H, W), resized as training resizes (unchanged when it fits)."""
    th, tw = image_size
    if arr.shape[:2] == (th, tw):
        return arr
    resample = _resample_for(arr.shape[:2], (th, tw))
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr), "RGB").resize((tw, th), resample))


def packed_rgb(frame: record.DecodedFrame, image_size: tuple[int, int]) -> np.ndarray:
    """A packed frame as (H, W, 3) uint8 at `image_size`, through Pillow's palette image (a few times faster on a
    CPU than expanding then resizing an array); the same pixels as `decode_frame_uint8` of its file."""
    indices = frame.indices
    if indices is None or frame.palette is None:
        return resize_rgb(frame.to_rgb(), image_size)
    image = Image.frombuffer("P", (frame.width, frame.height), np.ascontiguousarray(indices), "raw", "P", 0, 1)
    image.putpalette(frame.palette.tobytes())
    image = image.convert("RGB")
    th, tw = image_size
    if (frame.height, frame.width) != (th, tw):
        image = image.resize((tw, th), _resample_for((frame.height, frame.width), (th, tw)))
    return np.asarray(image)


def decode_native(data: bytes) -> np.ndarray:
    """Frame bytes -> (h, w, 3) uint8 RGB at the frame's own size, as training decodes it before any resize."""
    if not data:
        raise FrameDecodeError("empty file")
    if record.is_record(data):
        return record.decode(data).to_rgb()
    return _file_rgb(data, (1 << 16, 1 << 16))  # no JPEG draft: full resolution


def to_record(data: bytes, level: int = record.ZSTD_LEVEL) -> bytes | None:
    """A frame file decoded once into a frame record (`record`), as training decodes it; None: it does not decode."""
    try:
        return record.encode(decode_native(data), level=level)
    except (FrameDecodeError, ValueError):
        return None


def image_to_rgb(img: Image.Image) -> np.ndarray:
    """A Pillow image of any mode as (h, w, 3) uint8, converted as frame files are."""
    return _to_rgb_array(img)


def decode_frame_uint8(data: bytes, image_size: tuple[int, int]) -> np.ndarray:
    """Frame bytes -> (H, W, 3) uint8 RGB at ``image_size`` (H, W); writable.

    Raises FrameDecodeError with a one-line reason for anything unreadable.
    """
    arr = _decode_rgb(data, image_size)
    return arr if arr.flags.writeable else arr.copy()


def decode_frame(data: bytes, image_size: tuple[int, int]) -> torch.Tensor:
    """Frame bytes -> contiguous (3, H, W) float32 tensor in [0, 1] for training.

    Raises FrameDecodeError with a one-line reason for anything unreadable.
    """
    arr = _decode_rgb(data, image_size)
    # One pass: transpose + cast into a fresh contiguous buffer, then scale in place.
    out = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
    out /= 255.0
    return torch.from_numpy(out)
