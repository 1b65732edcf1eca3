"""Background sources for compositing: folders of images of any size and format (read one at a
time, so 10,000+ backgrounds cost only their file names in memory) and procedural backgrounds
(gradients, noise, textures, room-like layouts) made on demand from their index, so nothing needs
downloading. Both return RGB uint8 at the requested size, cover-cropped without distortion."""
from __future__ import annotations

import io
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from shards import storage

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_PIXELS = 64_000_000  # larger images are refused as possible decompression bombs
PROCEDURAL_KINDS = ("gradient", "noise", "stripes", "checks", "room")


class BackgroundError(ValueError):
    """A background that cannot be used; the message is the skip reason."""


def cover_resize(image: Image.Image, size: tuple[int, int], rng: np.random.Generator | None = None) -> Image.Image:
    """Scale ``image`` to cover ``size`` (width, height) keeping its aspect, then crop (centred, or
    at a seeded offset) to exactly ``size``."""
    w, h = size
    scale = max(w / image.width, h / image.height)
    new = (max(w, round(image.width * scale)), max(h, round(image.height * scale)))
    if new != image.size:
        image = image.resize(new, Image.BILINEAR, reducing_gap=2.0)
    x = int(rng.integers(0, new[0] - w + 1)) if rng is not None else (new[0] - w) // 2
    y = int(rng.integers(0, new[1] - h + 1)) if rng is not None else (new[1] - h) // 2
    return image.crop((x, y, x + w, y + h))


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: 16-bit and float scaled to 8 bits, CMYK and palettes converted,
    transparency flattened onto mid grey."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() if array.size else 1.0
        array = array / (65535.0 if image.mode.startswith("I;16") or top > 255 else max(top, 1.0)) * 255.0
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (128, 128, 128))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if image.mode == "RGB" else image.convert("RGB")


_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def _decode_reduced(image: Image.Image, size: tuple[int, int]) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale (in the DCT, ~4x cheaper at 1/2) when that
    still covers ``size`` once EXIF orientation is applied; other formats are left alone."""
    if image.format != "JPEG":
        return
    w, h = size
    if image.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS:
        w, h = h, w
    scale = max(w / image.width, h / image.height)
    image.draft("RGB", (int(np.ceil(image.width * scale)), int(np.ceil(image.height * scale))))


def load_background(path: str | Path, size: tuple[int, int], rng: np.random.Generator | None = None) -> np.ndarray:
    """Read one background image (a path or a URL) safely (EXIF orientation applied, any mode
    converted, bombs refused) as RGB uint8 of ``size``; BackgroundError says why not."""
    url, path = str(path), Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            source = io.BytesIO(storage.read_bytes(url)) if storage.is_remote(url) else path
            with Image.open(source) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise BackgroundError(f"{path.name}: {image.width}x{image.height} is over {MAX_PIXELS:,} pixels "
                                          "(refused as a possible decompression bomb)")
                _decode_reduced(image, size)
                image = ImageOps.exif_transpose(image)
                return np.asarray(cover_resize(_to_rgb(image), size, rng))
    except BackgroundError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BackgroundError(f"{path.name}: refused as a decompression bomb ({error})") from None
    except FileNotFoundError:
        raise BackgroundError(f"{path.name}: no such file") from None
    except (OSError, ValueError, SyntaxError) as error:
        reason = "empty file" if storage.size(url) == 0 else f"unreadable image ({error})"
        raise BackgroundError(f"{path.name}: {reason}") from None


class _Recent:
    """The last ``size`` backgrounds made (0: none kept), so repeated draws skip the decode."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()

    def get(self, key, make):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        if self.size > 0:
            self.items[key] = value
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class FolderBackgrounds:
    """The images under a folder or a URL prefix (recursively), by index; only file names are held
    (one listing), and each image is read when drawn."""

    def __init__(self, root: str | Path, cache_size: int = 32):
        self.root = storage.absolute(root)
        if not storage.is_dir(self.root):
            raise FileNotFoundError(f"backgrounds: {self.root} is not a folder")
        self.files = [f for f in storage.find(self.root) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        if not self.files:
            raise FileNotFoundError(f"backgrounds: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {self.root}")
        self._cache = _Recent(cache_size)

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        return self.files[index][len(self.root):].lstrip("/\\")

    def get(self, index: int, size: tuple[int, int]) -> np.ndarray:
        return self._cache.get((index, tuple(size)), lambda: load_background(self.files[index], size))


class ProceduralBackgrounds:
    """``count`` backgrounds made from their index and ``seed``: nothing stored, nothing downloaded."""

    def __init__(self, count: int = 10_000, seed: int = 0, cache_size: int = 32):
        self.count, self.seed = count, seed
        self._cache = _Recent(cache_size)

    def __len__(self) -> int:
        return self.count

    def name(self, index: int) -> str:
        return f"procedural-{self.seed}-{index:06d}-{PROCEDURAL_KINDS[index % len(PROCEDURAL_KINDS)]}"

    def get(self, index: int, size: tuple[int, int]) -> np.ndarray:
        return self._cache.get((index, tuple(size)), lambda: procedural_background(index, size, self.seed))


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """Value noise in 0..1: a coarse random grid upsampled smoothly (cheap at any size)."""
    w, h = size
    grid = rng.random((max(2, cells * h // w), cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.BICUBIC)).clip(0, 1)


def procedural_background(index: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, 0xBA5E, index])
    w, h = size
    kind = PROCEDURAL_KINDS[index % len(PROCEDURAL_KINDS)]
    c1, c2 = rng.integers(0, 256, 3).astype(np.float32), rng.integers(0, 256, 3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "gradient":
        angle = rng.uniform(0, np.pi)
        t = (xx * np.cos(angle) + yy * np.sin(angle))
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    elif kind == "noise":
        t = 0.6 * _smooth_noise(rng, size, int(rng.integers(3, 8))) + 0.4 * _smooth_noise(rng, size, 24)
    elif kind == "stripes":
        period = rng.uniform(12, 80)
        angle = rng.uniform(0, np.pi)
        t = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0).astype(np.float32)
        t = 0.85 * t + 0.15 * _smooth_noise(rng, size, 16)
    elif kind == "checks":
        period = int(rng.integers(16, 96))
        t = (((xx // period) + (yy // period)) % 2).astype(np.float32)
        t = 0.9 * t + 0.1 * _smooth_noise(rng, size, 16)
    else:  # room: a wall, a floor below a horizon, a window or two
        horizon = rng.uniform(0.45, 0.75) * h
        t = np.where(yy > horizon, 1.0, 0.25 * _smooth_noise(rng, size, 6)).astype(np.float32)
        t += np.where(yy > horizon, 0.15 * (yy - horizon) / h, 0)
        for _ in range(int(rng.integers(0, 3))):
            x0, y0 = rng.uniform(0, 0.8) * w, rng.uniform(0.05, 0.4) * h
            x1, y1 = x0 + rng.uniform(0.1, 0.3) * w, y0 + rng.uniform(0.1, 0.25) * h
            t = np.where((xx > x0) & (xx < x1) & (yy > y0) & (yy < min(y1, horizon)), 0.6, t)
    image = c1 + (c2 - c1) * np.clip(t, 0, 1)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_background(backgrounds, rng: np.random.Generator, size: tuple[int, int],
                    tries: int = 8) -> tuple[np.ndarray, str, list[str]]:
    """A random background of ``backgrounds`` at ``size``: (image, name, reasons of those skipped).
    Unusable images are skipped for others, up to ``tries``."""
    skipped = []
    for _ in range(tries):
        index = int(rng.integers(len(backgrounds)))
        try:
            return backgrounds.get(index, size), backgrounds.name(index), skipped
        except BackgroundError as error:
            skipped.append(str(error))
    raise BackgroundError(f"no usable background in {tries} tries: {'; '.join(skipped)}")


def open_backgrounds(config):
    """The background source a job config names: "procedural" or a folder of images."""
    if config.backgrounds == "procedural":
        return ProceduralBackgrounds(config.procedural_count, config.seed)
    return FolderBackgrounds(config.backgrounds)
