"""Contact sheets for people to look at: per sample, the source (on a checkerboard, so
transparency shows), the standardized render, and the source with its skeleton drawn over it."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from render.skeleton import OPENPOSE_LIMBS

# OpenPose's 18 colours (RGB), as DWPose and controlnet_aux draw them: limb i of OPENPOSE_LIMBS and
# keypoint i of OPENPOSE18 take colour i.
LIMB_COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]


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


def sheet(rows: list[list[Image.Image]], thumb_width: int = 160, groups: int = 2) -> Image.Image:
    """Rows of equally sized images -> one image, rows split into ``groups`` side-by-side columns."""
    if not rows:
        return Image.new("RGB", (thumb_width, thumb_width), (255, 255, 255))
    columns = len(rows[0])
    th = int(round(thumb_width * rows[0][0].height / rows[0][0].width))
    groups = min(groups, len(rows))
    per_group = -(-len(rows) // groups)
    out = Image.new("RGB", (thumb_width * columns * groups + 8 * (groups - 1), th * per_group), (255, 255, 255))
    for i, row in enumerate(rows):
        group, r = divmod(i, per_group)
        for j, image in enumerate(row):
            out.paste(image.convert("RGB").resize((thumb_width, th), Image.LANCZOS),
                      (group * (thumb_width * columns + 8) + j * thumb_width, r * th))
    return out


def labelled(image: Image.Image, text: str) -> Image.Image:
    """``text`` in the top-left corner, sized to stay legible when the image becomes a thumbnail."""
    font = ImageFont.load_default(size=max(10, image.width // 24))
    ImageDraw.Draw(image).text((6, 6), text, fill=(0, 0, 0), font=font)
    return image


def contact_sheet(records: list[dict], thumb_width: int = 160, groups: int = 2) -> Image.Image:
    """Decoded ``synthetic_pair`` records; each row: source | standard | source with skeleton."""
    rows = []
    for record in records:
        src, meta = record["src.png"], record["json"]
        rows.append([labelled(on_checkerboard(src), record["__key__"]), Image.fromarray(record["std.png"]),
                     draw_skeleton(on_checkerboard(src), meta["src"]["keypoints"], radius=max(3, src.shape[1] // 100))])
    return sheet(rows, thumb_width, groups)


def composite_sheet(pairs: dict[str, dict], composites: list[dict], thumb_width: int = 128,
                    groups: int = 2) -> Image.Image:
    """Decoded ``composited_pair`` records (with their source pairs by key); each row: source |
    composite | background mask | pose image."""
    rows = []
    for record in composites:
        source = pairs[record["json"]["pair_key"]]["src.png"]
        rows.append([labelled(on_checkerboard(source), record["__key__"]), Image.fromarray(record["src.jpg"]),
                     Image.fromarray(record["src_bgmask.png"]), Image.fromarray(record["src_pose.png"])])
    return sheet(rows, thumb_width, groups)


INSTANCE_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48))


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` scaled to fit ``size``, centred on white."""
    canvas = Image.new("RGB", size, (255, 255, 255))
    image = image.copy()
    image.thumbnail(size)
    canvas.paste(image.convert("RGB"), ((size[0] - image.width) // 2, (size[1] - image.height) // 2),
                 image.getchannel("A") if image.mode == "RGBA" else None)
    return canvas


def router_sheet(records: list[dict], thumb_width: int = 128, groups: int = 1) -> Image.Image:
    """Decoded ``router_sample`` records; each row: image | instance masks in colour | up to four
    segmented subject references."""
    rows = []
    for record in records:
        image = record["image.jpg"]
        n = len(record["json"]["subjects"])
        overlay = (image * 0.35).astype(np.uint8)
        for i in range(n):
            overlay[record[f"mask{i}.png"] > 127] = INSTANCE_COLOURS[i]
        size = (image.shape[1], image.shape[0])
        refs = [_fit(Image.fromarray(record[f"subj{i}.png"], "RGBA"), size) for i in range(n)]
        refs += [Image.new("RGB", size, (255, 255, 255))] * (4 - n)
        rows.append([labelled(Image.fromarray(image), record["__key__"]), Image.fromarray(overlay), *refs])
    return sheet(rows, thumb_width, groups)
