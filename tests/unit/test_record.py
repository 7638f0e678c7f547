"""A packed frame (`pokevq.data.record`) is the frame as training decodes its file, and a damaged one is refused."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from pokevq.data import record
from pokevq.data.expand import device_resizable, expand, unpack
from pokevq.data.frames import decode_frame, decode_frame_uint8, decode_native, packed_rgb
from pokevq.data.pack import _packed
from pokevq.errors import FrameDecodeError

GB_SHADES = np.array([[224, 248, 208], [136, 192, 112], [52, 104, 86], [8, 24, 32]], dtype=np.uint8)


def _tiles(shape: tuple[int, int], colours: int, seed: int) -> np.ndarray:
    """Indices laid out in 8x8 tiles, as a Game Boy screen is."""
    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, colours, size=(16, 8, 8))
    layout = rng.integers(0, 16, size=(shape[0] // 8, shape[1] // 8))
    return tiles[layout].transpose(0, 2, 1, 3).reshape(shape)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _frames() -> dict[str, bytes]:
    """PNGs of the kinds buckets hold: Game Boy (4 shades), Game Boy Color (56 colours), palette and RGB files."""
    gb = GB_SHADES[_tiles((144, 160), 4, 0)]
    gbc_palette = np.random.default_rng(1).integers(0, 256, size=(56, 3)).astype(np.uint8)
    gbc = gbc_palette[_tiles((144, 160), 56, 2)]
    indexed = Image.fromarray(_tiles((144, 160), 4, 3).astype(np.uint8), "P")
    indexed.putpalette(GB_SHADES.ravel().tolist())
    with_alpha = np.dstack([gbc, np.where(_tiles((144, 160), 2, 4) == 0, 0, 255).astype(np.uint8)])
    photo = np.random.default_rng(5).integers(0, 256, size=(144, 160, 3)).astype(np.uint8)  # > 256 colours
    return {
        "gb_rgb": _png(Image.fromarray(gb, "RGB")),
        "gb_palette_png": _png(indexed),
        "gbc_rgb": _png(Image.fromarray(gbc, "RGB")),
        "gbc_rgba": _png(Image.fromarray(with_alpha, "RGBA")),
        "grey": _png(Image.fromarray(gb[..., 1], "L")),
        "many_colours": _png(Image.fromarray(photo, "RGB")),
        "odd_size": _png(Image.fromarray(gb[:100, :90], "RGB")),
    }


@pytest.mark.parametrize("name", sorted(_frames()))
def test_a_packed_frame_is_its_file_decoded_pixel_for_pixel(name):
    data = _frames()[name]
    packed, is_record, _ = _packed(data)
    assert is_record and record.is_record(packed)
    assert np.array_equal(decode_native(packed), decode_native(data))
    for size in ((144, 160), (72, 80), (36, 40), (288, 320), (100, 90), (120, 100)):
        assert torch.equal(decode_frame(packed, size), decode_frame(data, size)), size


@pytest.mark.parametrize("name", ["gb_rgb", "gb_palette_png", "gbc_rgb", "gbc_rgba", "grey"])
def test_palette_frames_expanded_on_the_device_equal_the_cpu_decode(name):
    data = _frames()[name]
    frame = record.decode(_packed(data)[0])
    assert frame.indices is not None and frame.rgb is None
    assert frame.colours <= (57 if name.startswith("gbc") else 4)  # 56 colours, and black under the alpha
    for size in ((144, 160), (72, 80), (36, 40), (288, 320)):
        assert device_resizable((144, 160), size)
        palettes = np.zeros((2, len(frame.palette) + 8, 3), dtype=np.uint8)  # a batch pads palettes to its largest
        palettes[:, : len(frame.palette)] = frame.palette
        images = expand(torch.from_numpy(np.stack([frame.indices] * 2)), torch.from_numpy(palettes), size)
        assert torch.equal(images[1], decode_frame(data, size)), size
    assert not device_resizable((144, 160), (100, 90))  # Pillow's bilinear: decoded on the CPU instead


def test_game_boy_frames_take_two_bits_and_are_smaller_than_their_png():
    frames = _frames()
    packed = {name: _packed(data)[0] for name, data in frames.items()}
    assert packed["gb_rgb"][6] == 2 and packed["gbc_rgb"][6] == 8  # bits per pixel
    assert packed["many_colours"][5] == record.KIND_RGB
    for name in ("gb_rgb", "gbc_rgb", "gb_palette_png"):
        assert len(packed[name]) <= len(frames[name]), name


def test_a_damaged_record_is_a_frame_error_never_a_wrong_frame():
    good = _packed(_frames()["gbc_rgb"])[0]
    flipped = bytearray(good)
    flipped[-5] ^= 0x10
    with pytest.raises(FrameDecodeError, match="checksum"):
        record.decode(bytes(flipped))
    with pytest.raises(FrameDecodeError, match="truncated"):
        record.decode(good[:10])
    with pytest.raises(FrameDecodeError):
        record.decode(good[:-3])
    newer = bytearray(good)
    newer[4] = record.VERSION + 1
    with pytest.raises(FrameDecodeError, match="newer than this pokevq reads"):
        record.decode(bytes(newer))


def test_a_hostile_record_with_a_valid_checksum_cannot_index_outside_its_palette():
    indices = np.full(144 * 160, 200, dtype=np.uint8)  # index 200 of a one-colour palette
    pixels = record.zstandard.ZstdCompressor().compress(indices.tobytes())
    body = bytes([9, 9, 9]) + pixels
    header = struct.pack("<4sBBBBHHHII", record.MAGIC, 1, record.KIND_PALETTE, 8, record.CODEC_ZSTD, 144, 160, 1,
                         record.zlib.crc32(body), len(pixels))
    frame = record.decode(header + body)
    assert frame.palette.shape == (256, 3) and frame.colours == 1
    assert not frame.to_rgb().any()  # black: the padded palette, never memory outside it
    images = expand(torch.from_numpy(frame.indices[None].copy()), torch.from_numpy(frame.palette[None].copy()),
                    (144, 160))
    assert not images.any()


def test_a_file_that_does_not_decode_is_packed_as_it_is():
    assert _packed(b"not a png") == (b"not a png", False, 9)


@pytest.mark.parametrize("name", sorted(_frames()))
def test_a_packed_frame_made_rgb_on_the_cpu_is_its_file_decoded(name):
    data = _frames()[name]
    frame = record.decode(_packed(data)[0])
    for size in ((144, 160), (72, 80), (36, 40), (288, 320), (100, 90), (120, 100)):
        assert np.array_equal(packed_rgb(frame, size), decode_frame_uint8(data, size)), size


@pytest.mark.parametrize("name", ["gb_rgb", "gbc_rgb", "grey"])
def test_indices_unpacked_on_the_device_equal_the_frames_own(name):
    """A batch carries a frame's indices packed (2 or 4 bits); `unpack` on the device gives the CPU's indices."""
    frame = record.decode(_packed(_frames()[name])[0])
    assert frame.packed is not None and len(frame.packed) == -(-144 * 160 * frame.bits // 8)
    unpacked = unpack(torch.from_numpy(np.stack([frame.packed] * 3)), frame.bits, (144, 160))
    own = torch.from_numpy(frame.indices.copy())
    assert unpacked.shape == (3, 144, 160) and all(torch.equal(u, own) for u in unpacked)

