import io

import numpy as np
import pytest
from PIL import Image

from shards.encoding import encode_png


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
