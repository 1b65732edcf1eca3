"""Contact sheets for people to look at: per sample, the source (on a checkerboard, so
transparency shows), the standardized render, and the source with its skeleton drawn over it."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from render.skeleton import OPENPOSE_LIMBS

LIMB_COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170)]


def on_checkerboard(rgba: np.ndarray, cell: int = 16) -> Image.Image:
    h, w = rgba.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // cell + xx // cell) % 2 == 0)[..., None], 200, 235).astype(np.uint8)
    image = Image.fromarray(np.repeat(board, 3, axis=2))
    image.paste(Image.fromarray(rgba, "RGBA"), (0, 0), Image.fromarray(rgba[..., 3]))
    return image


def draw_skeleton(image: Image.Image, keypoints, radius: int = 4) -> Image.Image:
    """OpenPose-style limbs and joints; hidden keypoints as hollow circles."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    kp = np.asarray(keypoints, dtype=float)
    for colour, (a, b) in zip(LIMB_COLOURS, OPENPOSE_LIMBS):
        if kp[a, 2] > 0 and kp[b, 2] > 0:
            draw.line([tuple(kp[a, :2]), tuple(kp[b, :2])], fill=colour, width=max(2, radius // 2 + 1))
    for i, (x, y, visible) in enumerate(kp):
        box = (x - radius, y - radius, x + radius, y + radius)
        colour = LIMB_COLOURS[i % len(LIMB_COLOURS)]
        draw.ellipse(box, fill=colour if visible > 0 else None, outline=(0, 0, 0) if visible > 0 else colour)
    return image


def contact_sheet(records: list[dict], thumb_width: int = 160, groups: int = 2) -> Image.Image:
    """Decoded ``synthetic_pair`` records -> one image; each row: source | standard | skeleton."""
    rows = []
    for record in records:
        src, meta = record["src.png"], record["json"]
        row = [on_checkerboard(src), Image.fromarray(record["std.png"]).convert("RGB"),
               draw_skeleton(on_checkerboard(src), meta["src"]["keypoints"], radius=max(3, src.shape[1] // 100))]
        draw = ImageDraw.Draw(row[0])
        draw.text((6, 6), record["__key__"], fill=(0, 0, 0))
        rows.append(row)
    if not rows:
        return Image.new("RGB", (thumb_width * 3, thumb_width), (255, 255, 255))
    h, w = records[0]["src.png"].shape[:2]
    th = int(round(thumb_width * h / w))
    per_group = -(-len(rows) // groups)
    sheet = Image.new("RGB", (thumb_width * 3 * groups + 8 * (groups - 1), th * per_group), (255, 255, 255))
    for i, row in enumerate(rows):
        group, r = divmod(i, per_group)
        for j, image in enumerate(row):
            sheet.paste(image.resize((thumb_width, th), Image.LANCZOS),
                        (group * (thumb_width * 3 + 8) + j * thumb_width, r * th))
    return sheet
