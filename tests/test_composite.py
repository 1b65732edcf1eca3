import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from render.compositing.backgrounds import (
    BackgroundError,
    FolderBackgrounds,
    ProceduralBackgrounds,
    load_background,
    procedural_background,
)
from render.compositing.composite import (
    CompositeConfig,
    Placement,
    alpha_box,
    composite,
    pose_image,
    sample_placement,
)

SIZE = (128, 192)


def character_rgba(seed: int = 0) -> np.ndarray:
    """A synthetic RGBA 'character': opaque noise body with a soft edge, on transparency."""
    rng = np.random.default_rng(seed)
    rgba = np.zeros((192, 128, 4), np.uint8)
    rgba[40:170, 40:90, :3] = rng.integers(0, 256, (130, 50, 3))
    rgba[40:170, 40:90, 3] = 255
    rgba[40:170, 39, 3] = rgba[40:170, 90, 3] = 120  # a partly transparent rim
    rgba[40:170, 39, :3] = rgba[40:170, 90, :3] = 200
    return rgba


def test_character_pixels_are_unchanged_where_alpha_is_one():
    rgba = character_rgba()
    background = procedural_background(3, SIZE)
    for config in (CompositeConfig(feather_px=0, shadow=0), CompositeConfig()):
        out = composite(rgba, background, Placement(1.0, (10, -5)), config)
        ys, xs = np.nonzero(out["alpha"] == 255)
        assert len(ys) > 5000
        assert np.array_equal(out["image"][ys, xs], rgba[ys + 5, xs - 10, :3])
    # scaled: resampling a solid region gives back its colour exactly wherever alpha is 255
    solid_block = np.zeros((192, 128, 4), np.uint8)
    solid_block[30:180, 30:100] = (200, 60, 30, 255)
    out = composite(solid_block, background, Placement(0.75, (20, 10)), CompositeConfig(feather_px=0, shadow=0))
    assert (out["alpha"] == 255).sum() > 4000
    assert (out["image"][out["alpha"] == 255] == (200, 60, 30)).all()


def test_background_mask_is_the_complement_of_the_moved_alpha():
    rgba = character_rgba(1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        placement = sample_placement(rng, rgba[..., 3], SIZE, CompositeConfig(max_crop=0.2))
        out = composite(rgba, procedural_background(int(rng.integers(100)), SIZE), placement, CompositeConfig())
        assert np.array_equal(out["bg_mask"].astype(int), 255 - out["alpha"].astype(int))
        assert (out["alpha"] > 0).sum() > 0


def test_placement_keeps_the_character_in_frame_and_keypoints_inside_the_mask():
    rgba = character_rgba(2)
    keypoints = [[x, y, 1.0] for x, y in zip(np.linspace(45, 85, 18), np.linspace(45, 165, 18))]
    rng = np.random.default_rng(1)
    inside = total = 0
    for _ in range(50):
        placement = sample_placement(rng, rgba[..., 3], SIZE, CompositeConfig())
        out = composite(rgba, procedural_background(0, SIZE), placement, CompositeConfig(feather_px=0))
        moved = placement.move(keypoints, SIZE)
        x0, y0, x1, y1 = alpha_box(out["alpha"])
        assert (out["alpha"] > 0).sum() >= 0.97 * (rgba[..., 3] > 0).sum() * placement.scale ** 2  # nothing cut off
        visible = moved[moved[:, 2] > 0]
        inside += (out["alpha"][visible[:, 1].astype(int), visible[:, 0].astype(int)] > 0).sum()
        total += len(visible)
    assert total == 50 * 18 and inside / total >= 0.98


def test_pose_image_draws_visible_keypoints_only():
    kp = [[10.0 + 5 * i, 20.0 + 8 * i, 1.0 if i < 10 else 0.0] for i in range(18)]
    image = pose_image(kp, SIZE)
    assert image.shape == (192, 128, 3) and image[20, 10].any()
    assert not image[int(20 + 8 * 15), int(10 + 5 * 15)].any()


def _save(path, image: Image.Image, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.fixture()
def odd_backgrounds(tmp_path):
    rgb = Image.fromarray(procedural_background(1, (300, 200)))
    _save(tmp_path / "plain.jpg", rgb)
    _save(tmp_path / "cmyk.jpg", rgb.convert("CMYK"))
    _save(tmp_path / "palette.png", rgb.convert("P"))
    _save(tmp_path / "sixteen.png", Image.fromarray((np.arange(200 * 300).reshape(200, 300) % 65535).astype(np.uint16)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored landscape, shown portrait
    _save(tmp_path / "rotated.jpg", rgb, exif=exif)
    _save(tmp_path / "huge.png", Image.new("RGB", (4000, 3000), (10, 200, 30)))
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all" * 10)
    (tmp_path / "bomb.png").write_bytes(_tiny_png_claiming(100_000, 100_000))
    return tmp_path


def _tiny_png_claiming(width: int, height: int) -> bytes:
    """A few bytes whose header claims width x height pixels: a decompression bomb's calling card."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_odd_background_images_are_converted_or_skipped_with_a_reason(odd_backgrounds):
    for name in ("plain.jpg", "cmyk.jpg", "palette.png", "sixteen.png", "rotated.jpg", "huge.png"):
        image = load_background(odd_backgrounds / name, SIZE)
        assert image.shape == (192, 128, 3) and image.dtype == np.uint8, name
    assert load_background(odd_backgrounds / "sixteen.png", SIZE).max() > 100  # scaled, not clipped to black
    for name, reason in (("zero.png", "empty file"), ("garbage.jpg", "unreadable"), ("bomb.png", "decompression bomb")):
        with pytest.raises(BackgroundError, match=reason):
            load_background(odd_backgrounds / name, SIZE)
    folder = FolderBackgrounds(odd_backgrounds)
    assert len(folder) == 9


def test_exif_rotation_is_applied(tmp_path):
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, :150] = 255  # left half white when stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: white ends up on top
    Image.fromarray(image).save(tmp_path / "r.jpg", exif=exif)
    out = load_background(tmp_path / "r.jpg", (100, 300))
    assert out[:100].mean() > 200 and out[-100:].mean() < 50


def test_procedural_backgrounds_are_deterministic_and_varied():
    source = ProceduralBackgrounds(10_000, seed=3)
    assert len(source) == 10_000
    assert np.array_equal(source.get(42, SIZE), procedural_background(42, SIZE, 3))
    means = {tuple(source.get(i, SIZE).mean((0, 1)).round()) for i in range(20)}
    assert len(means) == 20


def test_router_scene_instance_masks_are_disjoint_and_cover_the_visible_alphas():
    from render.compositing.scenes import SceneConfig, compose_scene
    rng = np.random.default_rng(3)
    for n in (2, 3, 4):
        sources = [character_rgba(seed) for seed in range(n)]
        scene = compose_scene(sources, procedural_background(n, SIZE), rng, SceneConfig(min_visible=0.05))
        masks = np.stack(scene["masks"])
        assert masks.shape == (n, 192, 128)
        assert (masks.sum(0) <= 1).all()  # disjoint
        union_of_alphas = np.zeros((192, 128), bool)
        for source, placement in zip(sources, scene["placements"]):
            alone = composite(source, procedural_background(n, SIZE), placement, SceneConfig().composite)
            union_of_alphas |= alone["alpha"] > 0
        assert np.array_equal(masks.any(0), union_of_alphas)
        assert all(m.any() for m in masks)
