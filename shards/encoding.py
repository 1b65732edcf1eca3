"""Image encoding for shard members: fast lossless PNG and JPEG.

PNG is written here rather than by Pillow: Pillow tries every row filter on every row, ~19 ms
for a 512x768 RGBA render. One "Up" filter (each row minus the row above, a vectorized
subtraction) deflated by zlib with its run-length strategy takes ~10 ms at the same size: on
renders the filtered rows are mostly runs (measured: docs/benchmarks.md). zlib, not a faster
deflate: its output is the same bytes in every process (ISA-L's was not), which re-runs, resumes
and the local/Ray runners rely on."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: grey, grey+alpha, RGB, RGBA
_UP_FILTER = 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """An 8-bit PNG of ``image`` (H x W, or H x W x 1..4 channels). zlib levels: 1-3 with the
    run-length strategy (fast), 4-9 with the default one (smaller on photos, slower), 0 stores."""
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png takes uint8 images, not {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in _COLOUR_TYPE:
        raise ValueError(f"encode_png takes H x W x 1..4 images, not shape {image.shape}")
    height, width, channels = image.shape
    rows = np.ascontiguousarray(image).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = _UP_FILTER
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # wraps modulo 256, as PNG's filter does
    raw = filtered.tobytes()
    strategy = zlib.Z_RLE if compress_level <= 3 else zlib.Z_DEFAULT_STRATEGY
    deflate = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 8, strategy)
    data = deflate.compress(raw) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
