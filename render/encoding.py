"""Image encoding for shard members: fast PNG (lossless, zlib level 1 by default) and JPEG."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
