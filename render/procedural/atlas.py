"""The character's one texture: an atlas of solid and patterned regions drawn with numpy, and the
mapping of a part's UVs into its region, so the whole body is a single material."""
from __future__ import annotations

import numpy as np

from render.procedural.params import CharacterParams

ATLAS = 512
# Texture atlas regions (x0, y0, x1, y1) in pixels.
REGIONS = {
    "shirt": (0, 0, 256, 256), "pants": (256, 0, 512, 256), "skin": (0, 256, 128, 384),
    "shoes": (128, 256, 256, 384), "hair": (256, 256, 384, 384), "iris": (384, 256, 448, 320),
    "mouth": (448, 256, 512, 320), "sclera": (384, 320, 448, 384), "brow": (448, 320, 512, 384),
}
PATTERNED = ("shirt", "pants")


def to_region(uv: np.ndarray, region: str) -> np.ndarray:
    x0, y0, x1, y1 = REGIONS[region]
    if region not in PATTERNED:  # solid colour: every vertex samples the region's centre
        return np.tile([(x0 + x1) / 2 / ATLAS, (y0 + y1) / 2 / ATLAS], (len(uv), 1))
    inset = 2
    return np.stack([(x0 + inset + uv[:, 0] * (x1 - x0 - 2 * inset)) / ATLAS,
                     (y0 + inset + uv[:, 1] * (y1 - y0 - 2 * inset)) / ATLAS], 1)


def draw_atlas(p: CharacterParams, rng: np.random.Generator) -> np.ndarray:
    atlas = np.full((ATLAS, ATLAS, 3), 128, np.uint8)
    solid = {"skin": p.skin, "shoes": p.shoes_colour, "hair": p.hair_colour, "iris": p.iris_colour,
             "mouth": (150, 40, 50), "sclera": (245, 245, 240), "brow": tuple(int(c * 0.7) for c in p.hair_colour)}
    for region, rgb in solid.items():
        x0, y0, x1, y1 = REGIONS[region]
        atlas[y0:y1, x0:x1] = rgb
    for region, pattern, c1, c2 in (("shirt", p.shirt_pattern, p.shirt_colour, p.shirt_colour2),
                                    ("pants", p.pants_pattern, p.pants_colour,
                                     tuple(int(c * 0.6) for c in p.pants_colour))):
        x0, y0, x1, y1 = REGIONS[region]
        yy, xx = np.mgrid[0:y1 - y0, 0:x1 - x0]
        period = int(rng.integers(12, 32))
        if pattern == "stripes":
            mask = (yy // period) % 2 == 0
        elif pattern == "checks":
            mask = ((yy // period) + (xx // period)) % 2 == 0
        elif pattern == "dots":
            mask = ((yy % period - period / 2) ** 2 + (xx % period - period / 2) ** 2) < (period / 4) ** 2
        else:
            mask = np.zeros_like(yy, bool)
        tile = np.where(mask[..., None], np.array(c2, np.uint8), np.array(c1, np.uint8))
        noise = rng.integers(-6, 7, tile.shape[:2])[..., None]  # a little fabric grain
        atlas[y0:y1, x0:x1] = np.clip(tile.astype(int) + noise, 0, 255)
    return atlas
