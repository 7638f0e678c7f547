"""A decoded frame as stored in a shard: palette indices, the frame's own palette, zstd, a checksum.

Decoding a PNG costs about 350 µs of a core; a GPU trains a frame in a few µs. So `pokevq pack`
decodes each frame once, exactly as training decodes it (`frames.decode_native`), and stores
what the model needs in a form that costs a few µs to read:

    offset  size  field
    0       4     magic b"PVQF"
    4       1     version (1)
    5       1     kind: 0 palette indices, 1 raw RGB (a frame of more than 256 colours)
    6       1     bits per pixel: 2, 4 or 8 (palette), 24 (RGB)
    7       1     codec: 1 zstd
    8       2     height                     (all little-endian)
    10      2     width
    12      2     colours in the palette (0 for RGB)
    14      4     CRC-32 of everything after this 22-byte header
    18      4     length of the compressed pixels
    22      3*colours  the palette, RGB
    ...           the pixels, zstd-compressed: row-major indices, packed least significant bits first
                  (pixel j of a byte at bits*j), or RGB bytes

Why: a Game Boy frame has 4 shades and a Game Boy Color screen at most 56 colours, so 2 or 4 bits
a pixel hold it before compression and the palette is a few bytes; the model's device unpacks the
indices and expands them to RGB in one gather (`Batch.pixels`), so the CPU never touches more than
the packed bits. zstd decompresses at GB/s and compresses these frames below their PNG size. The checksum makes a
flipped bit a counted, skipped frame instead of a silently wrong one.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

from pokevq.errors import FrameDecodeError

MAGIC = b"PVQF"
VERSION = 1
KIND_PALETTE, KIND_RGB = 0, 1
CODEC_ZSTD = 1
SUFFIX = ".pvqf"  # a packed frame's name inside its tar shard
_HEADER = struct.Struct("<4sBBBBHHHII")
HEADER_BYTES = _HEADER.size
ZSTD_LEVEL = 9  # compression runs once at pack time; decompression speed does not depend on the level

# Byte -> the indices it packs, viewed as one integer so unpacking is a single `np.take`.
_UNPACK = {
    bits: np.stack([(np.arange(256) >> (bits * j)) & ((1 << bits) - 1) for j in range(8 // bits)], axis=1)
    .astype(np.uint8).view({2: np.uint32, 4: np.uint16}[bits]).ravel()
    for bits in (2, 4)
}


@dataclass
class DecodedFrame:
    """A frame read from its record: palette indices (`packed` at `bits` a pixel) with `palette`, or `rgb`.

    The indices stay packed until something asks for them (`indices`): a GPU host's batch carries
    them packed and its device unpacks them (`expand.unpack`), so the data path's cores never do.
    """

    height: int
    width: int
    packed: np.ndarray | None = None  # the pixels' palette indices, `bits` each, least significant first
    bits: int = 8
    palette: np.ndarray | None = None  # (2 ** bits, 3): the frame's colours, then black
    rgb: np.ndarray | None = None
    colours: int = 0  # the frame's own colours, first in `palette`

    @property
    def indices(self) -> np.ndarray | None:
        """(H, W) uint8 palette indices, unpacked here (None for an RGB frame)."""
        if self.packed is None:
            return None
        pixels = self.height * self.width
        flat = self.packed if self.bits == 8 else _UNPACK[self.bits].take(self.packed).view(np.uint8)[:pixels]
        return flat.reshape(self.height, self.width)

    def to_rgb(self) -> np.ndarray:
        """(H, W, 3) uint8: the frame as training decodes its PNG."""
        if self.rgb is not None:
            return self.rgb
        indices = self.indices
        assert indices is not None and self.palette is not None
        return self.palette[indices]


def is_record(data: bytes) -> bool:
    return data[:4] == MAGIC


def bits_for(colours: int) -> int:
    return 2 if colours <= 4 else 4 if colours <= 16 else 8


def encode(rgb: np.ndarray, *, level: int = ZSTD_LEVEL) -> bytes:
    """An (H, W, 3) uint8 frame as a record: palette indices when it has at most 256 colours, else RGB."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {rgb.shape} {rgb.dtype}")
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    if not (0 < height < 65536 and 0 < width < 65536):
        raise ValueError(f"frame of {width}x{height} pixels cannot be stored")
    packed_rgb = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    colours, inverse = np.unique(packed_rgb.ravel(), return_inverse=True)
    compressor = zstandard.ZstdCompressor(level=level)
    if len(colours) > 256:
        kind, bits, palette = KIND_RGB, 24, b""
        pixels = compressor.compress(np.ascontiguousarray(rgb).tobytes())
    else:
        kind, bits = KIND_PALETTE, bits_for(len(colours))
        palette = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1).astype(np.uint8)
        palette = palette.tobytes()
        indices = inverse.astype(np.uint8)
        per_byte = 8 // bits
        if per_byte > 1:
            indices = np.concatenate([indices, np.zeros(-len(indices) % per_byte, dtype=np.uint8)])
            grouped = indices.reshape(-1, per_byte)
            indices = np.zeros(len(grouped), dtype=np.uint8)
            for j in range(per_byte):
                indices |= grouped[:, j] << (bits * j)
        pixels = compressor.compress(indices.tobytes())
    body = palette + pixels
    count = 0 if kind == KIND_RGB else len(colours)
    header = _HEADER.pack(MAGIC, VERSION, kind, bits, CODEC_ZSTD, height, width, count, zlib.crc32(body),
                          len(pixels))
    return header + body


_LOCAL = threading.local()  # a zstd decompressor may not be used by two threads at once: one per thread
_SHAPES = frozenset({(KIND_PALETTE, 2), (KIND_PALETTE, 4), (KIND_PALETTE, 8), (KIND_RGB, 24)})


def decode(data: bytes | memoryview) -> DecodedFrame:
    """A record back to its pixels; anything wrong is a `FrameDecodeError` with a one-line reason."""
    if len(data) < HEADER_BYTES:
        raise FrameDecodeError(f"truncated frame record ({len(data)} bytes)")
    magic, version, kind, bits, codec, height, width, count, crc, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameDecodeError("not a frame record")
    if version != VERSION:
        raise FrameDecodeError(f"frame record version {version} is newer than this pokevq reads ({VERSION}): "
                               "upgrade pokevq or run `pokevq pack --full` again")
    body = memoryview(data)[HEADER_BYTES:]
    if zlib.crc32(body) != crc:
        raise FrameDecodeError("corrupt frame record (checksum mismatch)")
    palette_bytes = 3 * count
    if (codec != CODEC_ZSTD or len(body) != palette_bytes + length or not height or not width
            or (kind, bits) not in _SHAPES or (kind == KIND_PALETTE and not 0 < count <= 1 << bits)):
        raise FrameDecodeError("corrupt frame record (inconsistent header)")
    pixels = height * width
    expected = pixels * 3 if kind == KIND_RGB else -(-pixels * bits // 8)
    decompressor = getattr(_LOCAL, "decompressor", None)
    if decompressor is None:
        decompressor = _LOCAL.decompressor = zstandard.ZstdDecompressor()
    try:
        raw = decompressor.decompress(body[palette_bytes:], max_output_size=expected)
    except zstandard.ZstdError as exc:
        raise FrameDecodeError(f"corrupt frame record ({exc})") from exc
    if len(raw) != expected:
        raise FrameDecodeError(f"corrupt frame record ({len(raw)} of {expected} pixel bytes)")
    packed = np.frombuffer(raw, dtype=np.uint8)
    if kind == KIND_RGB:
        return DecodedFrame(height, width, rgb=packed.reshape(height, width, 3))
    # The palette is padded to every index the bits can hold (black), so no index, even a hostile one, reads
    # outside it: on the CPU or in the device's gather. Cheaper than checking every pixel.
    palette = np.zeros((1 << bits, 3), dtype=np.uint8)
    palette[:count] = np.frombuffer(body[:palette_bytes], dtype=np.uint8).reshape(count, 3)
    return DecodedFrame(height, width, packed=packed, bits=bits, palette=palette, colours=count)
