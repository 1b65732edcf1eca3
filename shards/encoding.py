"""Image encoding for shard members: fast lossless PNG and JPEG.

PNG is written here rather than by Pillow: Pillow tries every row filter on every row, ~19 ms
for a 512x768 RGBA render. One "Up" filter (each row minus the row above, a vectorized
subtraction) deflated by zlib with its run-length strategy takes ~10 ms at the same size: on
renders the filtered rows are mostly runs (measured: docs/benchmarks.md). zlib, not a faster
deflate: its output is the same bytes in every process (ISA-L's was not), which re-runs, resumes
and the local/Ray runners rely on.

Reading is the mirror image: ``decode_png`` takes the PNGs this writer makes (and any 8-bit
grey/RGB/RGBA PNG whose rows use only the "None" and "Up" filters) straight to an array, inflating
with zlib-ng where it is installed (~3x faster than zlib) and undoing "Up" one vectorized row
addition at a time: ~2 ms for a 512x768 RGBA render, ~2.3x faster than Pillow (docs/benchmarks.md,
``pairforge bench loader``). Any other PNG returns None and the caller uses Pillow."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

try:  # the same format as zlib, inflated faster; optional
    from zlib_ng import zlib_ng as _inflater
except ImportError:  # pragma: no cover - zlib-ng is a dependency; plain zlib still decodes
    _inflater = zlib

_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: grey, grey+alpha, RGB, RGBA
_UP_FILTER = 2
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FAST_CHANNELS = {0: 1, 2: 3, 6: 4}  # colour types decode_png reads itself: grey, RGB, RGBA


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
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray | None:
    """The pixels of an 8-bit, non-interlaced grey (HxW), RGB or RGBA (HxWxC) PNG whose rows are
    filtered with "None" or "Up" only, as ``encode_png`` writes them; None for any other PNG (the
    caller decodes those with Pillow). Chunk CRCs and the zlib checksum are verified; a damaged
    file raises ValueError."""
    if not data.startswith(_SIGNATURE):
        return None
    view, pos, idat, header = memoryview(data), len(_SIGNATURE), [], None
    while pos + 12 <= len(data):
        (length,), kind = struct.unpack_from(">I", data, pos), bytes(view[pos + 4:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"PNG chunk {kind!r} runs past the end of the file (truncated)")
        if zlib.crc32(view[pos + 4:end]) != struct.unpack_from(">I", data, end)[0]:
            raise ValueError(f"PNG chunk {kind!r} fails its CRC (damaged)")
        if kind == b"IHDR":
            header = struct.unpack_from(">IIBBBBB", data, pos + 8)
        elif kind == b"IDAT":
            idat.append(view[pos + 8:end])
        elif kind == b"IEND":
            break
        elif kind == b"PLTE" or not kind[:1].islower():  # a palette or an unknown critical chunk
            return None
        pos = end + 4
    else:
        raise ValueError("PNG ends before its IEND chunk (truncated)")
    if header is None or not idat:
        raise ValueError("PNG without IHDR or IDAT")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or interlace or colour not in _FAST_CHANNELS:
        return None
    channels = _FAST_CHANNELS[colour]
    try:
        raw = _inflater.decompress(b"".join(idat))
    except Exception as error:  # zlib.error or zlib_ng.error
        raise ValueError(f"PNG image data does not inflate: {error}") from None
    if len(raw) != height * (width * channels + 1):
        raise ValueError(f"PNG image data is {len(raw)} bytes, {width}x{height}x{channels} needs "
                         f"{height * (width * channels + 1)}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, width * channels + 1)
    filters = rows[:, 0]
    if not np.isin(filters, (0, _UP_FILTER)).all():
        return None
    pixels = rows[:, 1:].copy()
    for y in np.flatnonzero(filters[1:] == _UP_FILTER) + 1:  # ascending: row y-1 is final when y is added
        np.add(pixels[y], pixels[y - 1], out=pixels[y])  # wraps modulo 256, as the filter does
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, channels)
