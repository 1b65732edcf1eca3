import io

import numpy as np
import pytest
from PIL import Image

from shards.encoding import decode_png, encode_png
from shards.reader import decode_member


def _images():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)  # odd sizes; every byte value, wrap-around in the filter
    render = np.zeros((96, 64, 4), np.uint8)
    render[20:70, 10:50] = (200, 120, 90, 255)
    render[20:70, 10] = (100, 60, 45, 128)
    return {"grey": noise[..., 0], "grey+alpha": noise[..., :2], "rgb": noise[..., :3], "rgba": noise,
            "render": render, "one row": noise[:1], "channel axis": noise[..., :1]}


@pytest.mark.parametrize("level", [0, 1, 3, 6, 9])
@pytest.mark.parametrize("name", list(_images()))
def test_png_decodes_to_the_same_pixels_in_pillow(name, level):
    image = _images()[name]
    data = encode_png(image, level)
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(decoded, image.reshape(decoded.shape))


def test_png_is_deterministic_and_small_on_renders():
    image = _images()["render"]
    assert encode_png(image) == encode_png(image.copy())
    assert len(encode_png(image)) < image.nbytes / 10


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.uint16), np.zeros((4, 4, 5), np.uint8), np.zeros(4, np.uint8)])
def test_png_refuses_what_it_cannot_write(image):
    with pytest.raises(ValueError, match="encode_png takes"):
        encode_png(image)


@pytest.mark.parametrize("level", [0, 1, 6])
@pytest.mark.parametrize("name", [n for n in _images() if n != "grey+alpha"])
def test_our_pngs_decode_fast_to_the_same_pixels_as_pillow(name, level):
    image = _images()[name]
    data = encode_png(image, level)
    pixels = decode_png(data)
    assert pixels is not None and pixels.dtype == np.uint8
    assert np.array_equal(pixels, np.asarray(Image.open(io.BytesIO(data))))


def _pillow_png(image, **options) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, "PNG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize("make", [
    lambda im: _pillow_png(im["rgba"]),                        # Pillow's adaptive filters (Sub, Paeth, ...)
    lambda im: _pillow_png(im["rgb"], compress_level=9),      # Pillow's filters again, on RGB
    lambda im: encode_png(im["grey+alpha"]),                   # grey+alpha: the reader widens it to RGBA
    lambda im: _pillow_png(im["rgb"][..., 0].astype(np.uint16) * 257),  # 16-bit
    lambda im: _pillow_png(Image.fromarray(im["rgb"]).convert("P")),    # a palette
], ids=["adaptive filters", "adaptive filters rgb", "grey+alpha", "16-bit", "palette"])
def test_other_pngs_fall_back_to_pillow_with_the_same_pixels(make):
    data = make(_images())
    expected = decode_member("png", data)  # what the reader returns
    with Image.open(io.BytesIO(data)) as image:
        assert expected.shape[:2] == (image.height, image.width)
    assert decode_png(data) is None  # not the fast path's kind: Pillow decodes it


def test_damaged_or_truncated_pngs_are_errors_not_pixels():
    data = encode_png(_images()["render"])
    idat = data.index(b"IDAT")
    damaged = data[:idat + 10] + bytes([data[idat + 10] ^ 0xFF]) + data[idat + 11:]
    with pytest.raises(ValueError, match="CRC"):
        decode_png(damaged)
    with pytest.raises(ValueError, match="truncated"):
        decode_png(data[:len(data) // 2])
    with pytest.raises(ValueError, match="IEND|truncated"):
        decode_png(data[:-12])
