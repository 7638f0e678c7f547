"""Tests for pokevq.data.frames: every mode decodes to sane RGB, bad input fails clearly."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pokevq.data.frames import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    decode_frame,
    decode_frame_uint8,
    is_image_key,
)
from pokevq.errors import FrameDecodeError

H, W = 144, 160
SIZE = (H, W)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def check_tensor(t: torch.Tensor, size: tuple[int, int] = SIZE) -> None:
    assert isinstance(t, torch.Tensor)
    assert t.shape == (3, *size)
    assert t.dtype == torch.float32
    assert t.is_contiguous()
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def colour_at(t: torch.Tensor, y: int, x: int) -> tuple[float, float, float]:
    return tuple(round(float(v), 2) for v in t[:, y, x])  # type: ignore[return-value]


def half_and_half(mode: str, left: object, right: object) -> Image.Image:
    img = Image.new(mode, (W, H), left)  # type: ignore[arg-type]
    img.paste(right, (W // 2, 0, W, H))  # type: ignore[arg-type]
    return img


# --- modes -----------------------------------------------------------------


def test_rgb_png_exact() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    data = encode(Image.fromarray(arr, "RGB"), "PNG")
    t = decode_frame(data, SIZE)
    check_tensor(t)
    assert torch.equal(t, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    u8 = decode_frame_uint8(data, SIZE)
    assert u8.shape == (H, W, 3) and u8.dtype == np.uint8 and u8.flags.writeable
    assert np.array_equal(u8, arr)


def test_grey_l() -> None:
    t = decode_frame(encode(half_and_half("L", 0, 255), "PNG"), SIZE)
    check_tensor(t)
    assert colour_at(t, 0, 0) == (0, 0, 0)
    assert colour_at(t, 0, W - 1) == (1, 1, 1)


def test_la_alpha_composited_over_black() -> None:
    img = half_and_half("LA", (200, 255), (200, 0))  # opaque left, transparent right
    t = decode_frame(encode(img, "PNG"), SIZE)
    check_tensor(t)
    assert colour_at(t, 5, 5) == (0.78, 0.78, 0.78)
    assert colour_at(t, 5, W - 5) == (0, 0, 0)


def test_rgba() -> None:
    img = half_and_half("RGBA", (255, 0, 0, 255), (0, 255, 0, 0))
    t = decode_frame(encode(img, "PNG"), SIZE)
    check_tensor(t)
    assert colour_at(t, 1, 1) == (1, 0, 0)
    assert colour_at(t, 1, W - 1) == (0, 0, 0)


def test_palette_without_transparency() -> None:
    img = Image.new("P", (W, H), 1)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    t = decode_frame(encode(img, "PNG"), SIZE)
    check_tensor(t)
    assert colour_at(t, 10, 10) == (0, 0, 1)


def test_palette_with_transparency() -> None:
    img = Image.new("P", (W, H), 0)
    img.putpalette([255, 255, 255, 0, 255, 0] + [0] * 762)
    img.paste(1, (0, 0, W // 2, H))
    data = encode(img, "PNG", transparency=0)  # index 0 (white) transparent
    assert "transparency" in Image.open(io.BytesIO(data)).info
    t = decode_frame(data, SIZE)
    check_tensor(t)
    assert colour_at(t, 3, 3) == (0, 1, 0)
    assert colour_at(t, 3, W - 3) == (0, 0, 0)  # transparent white -> black, not white


def test_16bit_grey_scaled_not_clipped() -> None:
    arr = np.zeros((H, W), np.uint16)
    arr[:, W // 2 :] = 65535
    arr[0, 0] = 32768
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    data = encode(img, "PNG")
    t = decode_frame(data, SIZE)
    check_tensor(t)
    assert colour_at(t, 5, W - 5) == (1, 1, 1)
    assert colour_at(t, 5, 5) == (0, 0, 0)
    assert colour_at(t, 0, 0) == (0.5, 0.5, 0.5)  # 32768 >> 8 = 128, not clipped to 255


def test_16bit_big_endian() -> None:
    arr = np.full((H, W), 0xFF00, dtype=">u2")
    img = Image.frombytes("I;16B", (W, H), arr.tobytes())
    u8 = decode_frame_uint8(encode(img, "TIFF"), SIZE)
    assert (u8 == 255).all()


def test_mode_i_and_f() -> None:
    i_img = Image.fromarray(np.full((H, W), 65535, np.int32))
    assert i_img.mode == "I"
    assert (decode_frame_uint8(encode(i_img, "TIFF"), SIZE) == 255).all()
    f_img = Image.fromarray(np.full((H, W), 128.0, np.float32))
    assert f_img.mode == "F"
    assert (decode_frame_uint8(encode(f_img, "TIFF"), SIZE) == 128).all()


def test_bilevel() -> None:
    img = half_and_half("1", 0, 1)
    t = decode_frame(encode(img, "PNG"), SIZE)
    check_tensor(t)
    assert colour_at(t, 0, 0) == (0, 0, 0)
    assert colour_at(t, 0, W - 1) == (1, 1, 1)


def test_cmyk_jpeg() -> None:
    img = Image.new("CMYK", (W, H), (0, 255, 255, 0))  # red
    data = encode(img, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    r, g, b = colour_at(decode_frame(data, SIZE), H // 2, W // 2)
    assert r > 0.9 and g < 0.1 and b < 0.1


def test_rgb_jpeg() -> None:
    data = encode(Image.new("RGB", (W, H), (0, 0, 255)), "JPEG", quality=95)
    t = decode_frame(data, SIZE)
    check_tensor(t)
    r, g, b = colour_at(t, H // 2, W // 2)
    assert r < 0.1 and g < 0.1 and b > 0.9


def test_ycbcr_and_bmp_and_webp() -> None:
    ycc = Image.new("RGB", (W, H), (0, 255, 0)).convert("YCbCr")
    r, g, b = colour_at(decode_frame(encode(ycc, "JPEG", quality=95), SIZE), 9, 9)
    assert g > 0.9 and r < 0.1 and b < 0.1
    bmp = encode(Image.new("RGB", (W, H), (255, 128, 0)), "BMP")
    assert colour_at(decode_frame(bmp, SIZE), 0, 0) == (1, 0.5, 0)
    webp = encode(Image.new("RGB", (W, H), (255, 0, 0)), "WEBP", lossless=True)
    assert colour_at(decode_frame(webp, SIZE), 0, 0) == (1, 0, 0)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_first_frame(fmt: str) -> None:
    red = Image.new("RGB", (W, H), (255, 0, 0))
    blue = Image.new("RGB", (W, H), (0, 0, 255))
    data = encode(red, fmt, save_all=True, append_images=[blue], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    r, g, b = colour_at(decode_frame(data, SIZE), H // 2, W // 2)
    assert r > 0.95 and g < 0.05 and b < 0.05


# --- resizing ----------------------------------------------------------------


def test_resize_down_box() -> None:
    data = encode(half_and_half("RGB", (255, 0, 0), (0, 0, 255)), "PNG")
    t = decode_frame(data, (72, 80))
    check_tensor(t, (72, 80))
    assert colour_at(t, 0, 0) == (1, 0, 0)
    assert colour_at(t, 71, 79) == (0, 0, 1)


def test_resize_up_nearest_exact_blocks() -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = decode_frame_uint8(encode(Image.fromarray(arr, "RGB"), "PNG"), (288, 320))
    assert out.shape == (288, 320, 3)
    assert np.array_equal(out, arr.repeat(2, axis=0).repeat(2, axis=1))


def test_resize_non_integer_up() -> None:
    data = encode(Image.new("RGB", (W, H), (0, 255, 0)), "PNG")
    t = decode_frame(data, (200, 250))
    check_tensor(t, (200, 250))
    assert colour_at(t, 100, 100) == (0, 1, 0)


def test_one_pixel_image() -> None:
    data = encode(Image.new("RGB", (1, 1), (255, 255, 0)), "PNG")
    t = decode_frame(data, SIZE)
    check_tensor(t)
    assert torch.equal(t, torch.tensor([1.0, 1.0, 0.0]).view(3, 1, 1).expand(3, H, W))


def test_large_jpeg_uses_draft() -> None:
    data = encode(Image.new("RGB", (W * 8, H * 8), (0, 0, 255)), "JPEG", quality=90)
    t = decode_frame(data, SIZE)
    check_tensor(t)
    r, g, b = colour_at(t, H // 2, W // 2)
    assert b > 0.9 and r < 0.1


def test_bad_image_size() -> None:
    data = encode(Image.new("RGB", (4, 4)), "PNG")
    with pytest.raises(ValueError):
        decode_frame(data, (0, 4))


# --- bad input -----------------------------------------------------------------


def test_empty_bytes() -> None:
    with pytest.raises(FrameDecodeError, match="^empty file$"):
        decode_frame(b"", SIZE)


def test_text_bytes() -> None:
    with pytest.raises(FrameDecodeError, match=r"^not an image \("):
        decode_frame(b"hello, this is a text file named frame_001.png\n", SIZE)
    with pytest.raises(FrameDecodeError, match="not an image"):
        decode_frame_uint8(b"<?xml version='1.0'?><Error>AccessDenied</Error>", SIZE)


def test_truncated_png() -> None:
    rng = np.random.default_rng(2)
    data = encode(Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "RGB"), "PNG")
    with pytest.raises(FrameDecodeError, match=r"^truncated or corrupt image \("):
        decode_frame(data[: len(data) // 2], SIZE)


def test_truncated_jpeg() -> None:
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "RGB")
    data = encode(img, "JPEG")
    with pytest.raises(FrameDecodeError, match="truncated or corrupt"):
        decode_frame(data[: len(data) // 2], SIZE)


@pytest.mark.parametrize("dims", [(20000, 20000), (4097, 4097), (100_000, 100_000)])
def test_decompression_bomb_rejected_cheaply(dims: tuple[int, int]) -> None:
    data = png_declaring(*dims)
    assert len(data) < 200
    tracemalloc.start()
    try:
        with pytest.raises(FrameDecodeError, match="too large"):
            decode_frame(data, SIZE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024  # rejected before any pixel memory is allocated


def test_limit_is_local_not_global() -> None:
    assert Image.MAX_IMAGE_PIXELS != MAX_IMAGE_PIXELS  # importing frames changed nothing
    ok = png_declaring(4096, 4096)  # exactly at the limit: accepted, then fails on data
    with pytest.raises(FrameDecodeError, match="truncated or corrupt"):
        decode_frame(ok, SIZE)


# --- keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "frame_001.png",
        "run1/frames/frame_001.PNG",
        "a.jpg",
        "b.JPEG",
        "c.bmp",
        "d.webp",
        "e.gif",
        "deep/ünïcödé 日本.png",
    ],
)
def test_is_image_key_true(key: str) -> None:
    assert is_image_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "frames/",
        "frames.png/",
        ".DS_Store",
        "frames/.DS_Store",
        "Thumbs.db",
        "frames/Thumbs.db",
        "._frame_001.png",
        "frames/._frame_001.png",
        ".hidden.png",
        "__MACOSX/frames/frame_001.png",
        "notes.txt",
        "frame_001.png.tmp",
        "frame.tiff",
        "png",
    ],
)
def test_is_image_key_false(key: str) -> None:
    assert not is_image_key(key)


def test_extensions_constant() -> None:
    assert IMAGE_EXTENSIONS == (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
