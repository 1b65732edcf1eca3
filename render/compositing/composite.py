"""Compositing a transparent character render onto a background: one placement draw (scale and
integer offset) moves the image, the alpha, the background mask and the keypoints alike, so
the same function serves offline shards and on-the-fly training. Where the final alpha is 1 and
harmonization is off, the character's pixels are exactly the (scaled) render's."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from render.skeleton import OPENPOSE_LIMBS


@dataclass(frozen=True)
class CompositeConfig:
    height_fraction: tuple[float, float] = (0.45, 0.95)  # character height / frame height
    max_crop: float = 0.0        # fraction of the character that may leave the frame
    harmonize: float = 0.0       # 0 = off; 0..1 pulls the character's colour statistics to the background
    shadow: float = 0.35         # ground-shadow strength (0 = off)
    feather_px: float = 0.8      # soft edge: the alpha is eroded by a blur of this radius (0 = off)
    jpeg_quality: int = 95
    # The pose image draws every keypoint "in_frame" (occluded ones too, where the record has the
    # flags: a pose estimator such as DWPose returns the whole skeleton of a person in view), or
    # only the "visible" ones (in frame and not covered by another body part).
    pose_joints: str = "in_frame"

    def __post_init__(self):
        if self.pose_joints not in ("visible", "in_frame"):
            raise ValueError(f"pose_joints is {self.pose_joints!r}: choose visible or in_frame")


@dataclass(frozen=True)
class Placement:
    scale: float
    offset: tuple[int, int]  # where the scaled source's top-left lands in the output

    def move(self, keypoints: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """[x, y, visible] in the source -> the output; points leaving the frame become invisible."""
        kp = np.array(keypoints, dtype=float)
        kp[:, :2] = kp[:, :2] * self.scale + self.offset
        w, h = size
        outside = (kp[:, 0] < 0) | (kp[:, 0] >= w) | (kp[:, 1] < 0) | (kp[:, 1] >= h)
        kp[outside, 2] = 0.0
        return kp


def alpha_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """[x0, y0, x1, y1) of the non-zero alpha (OpenCV's bounding rectangle: ~10x numpy's any())."""
    import cv2

    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(alpha))
    if w == 0:
        raise ValueError("the source render is empty (alpha is zero everywhere)")
    return x, y, x + w, y + h


def sample_placement(rng: np.random.Generator, alpha: np.ndarray, size: tuple[int, int],
                     config: CompositeConfig) -> Placement:
    """Scale so the character's height is a drawn fraction of the frame, then an integer offset
    keeping it in frame (or cropped by at most ``max_crop`` of its size)."""
    w, h = size
    x0, y0, x1, y1 = alpha_box(alpha)
    scale = float(rng.uniform(*config.height_fraction)) * h / (y1 - y0)
    scale = min(scale, w * (1 + 2 * config.max_crop) / (x1 - x0))  # wide poses still fit
    bw, bh = (x1 - x0) * scale, (y1 - y0) * scale
    lo_x, hi_x = -x0 * scale - config.max_crop * bw, w - x1 * scale + config.max_crop * bw
    lo_y, hi_y = -y0 * scale - config.max_crop * bh, h - y1 * scale + config.max_crop * bh
    ox = rng.uniform(lo_x, hi_x) if hi_x > lo_x else (lo_x + hi_x) / 2
    oy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else (lo_y + hi_y) / 2
    return Placement(round(scale, 6), (int(np.floor(ox)), int(np.floor(oy))))


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """Straight RGBA -> premultiplied RGBA, round(c * a / 255) per channel (alpha 255 keeps the colour)."""
    import cv2
    alpha = np.ascontiguousarray(rgba[..., 3])
    out = cv2.multiply(np.ascontiguousarray(rgba), cv2.cvtColor(alpha, cv2.COLOR_GRAY2RGBA), scale=1 / 255)
    out[..., 3] = alpha
    return out


def _scaled_crop(rgba: np.ndarray, box: tuple[int, int, int, int], scale: float) -> tuple[np.ndarray, int, int]:
    """The source's alpha box, premultiplied and scaled by ``scale`` (premultiplied resampling
    leaves no dark fringes), and where its top-left lands relative to the scaled full source."""
    import cv2

    x0, y0, x1, y1 = box
    if scale == 1.0:
        return premultiply(rgba[y0:y1, x0:x1]), x0, y0
    # Resample a box aligned to the scaled grid, so the placement stays exact: sample the source
    # at pixel centres (i + 0.5) / scale - 0.5, which is what a plain resize of the frame does.
    sx0, sy0 = int(np.floor(x0 * scale)), int(np.floor(y0 * scale))
    sx1, sy1 = int(np.ceil(x1 * scale)), int(np.ceil(y1 * scale))
    margin = int(np.ceil(1 / scale)) + 2
    h, w = rgba.shape[:2]
    cx0, cy0 = max(0, int(sx0 / scale) - margin), max(0, int(sy0 / scale) - margin)
    cx1, cy1 = min(w, int(np.ceil(sx1 / scale)) + margin), min(h, int(np.ceil(sy1 / scale)) + margin)
    crop = premultiply(rgba[cy0:cy1, cx0:cx1])
    matrix = np.array([[scale, 0, (cx0 + 0.5) * scale - 0.5 - sx0], [0, scale, (cy0 + 0.5) * scale - 0.5 - sy0]])
    if scale < 0.5:  # strong reductions average areas (no aliasing), then shift by the sub-pixel remainder
        scaled = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        shift = np.array([[1, 0, matrix[0, 2]], [0, 1, matrix[1, 2]]], dtype=np.float64)
        fg = cv2.warpAffine(scaled, shift, (sx1 - sx0, sy1 - sy0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        fg = cv2.warpAffine(crop, matrix, (sx1 - sx0, sy1 - sy0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return fg, sx0, sy0


def _harmonize(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, strength: float) -> np.ndarray:
    """Move the character's per-channel mean and spread part of the way to the background's.
    ``fg`` is premultiplied, so the colour shift is scaled by alpha: gain * c + a * offset."""
    solid = alpha == 255
    if not solid.any():
        return fg
    f = fg[solid].astype(np.float32)
    b = bg.reshape(-1, 3).astype(np.float32)
    mu_f, sd_f, mu_b, sd_b = f.mean(0), f.std(0) + 1e-3, b.mean(0), b.std(0) + 1e-3
    gain = 1 + strength * (sd_b / sd_f - 1)
    offset = mu_f * (1 - gain) + strength * (mu_b - mu_f)
    out = fg.astype(np.float32) * gain + (alpha.astype(np.float32) / 255)[..., None] * offset
    return np.clip(out + 0.5, 0, alpha[..., None]).astype(np.uint8)  # premultiplied: colour <= alpha


def _shadow(out: np.ndarray, foot_x: float, foot_y: float, width: float, strength: float) -> None:
    """Darken the ground under the feet with a soft ellipse (in place)."""
    h, w = out.shape[:2]
    rx, ry = max(width * 0.55, 2.0), max(width * 0.09, 1.0)
    x0, x1 = int(max(0, foot_x - 2 * rx)), int(min(w, foot_x + 2 * rx))
    y0, y1 = int(max(0, foot_y - 2 * ry)), int(min(h, foot_y + 2 * ry))
    if x1 <= x0 or y1 <= y0:
        return
    across = np.exp(-((np.arange(x0, x1, dtype=np.float32) - foot_x) / rx) ** 2 * 1.5)
    down = np.exp(-((np.arange(y0, y1, dtype=np.float32) - foot_y) / ry) ** 2 * 1.5)
    falloff = np.outer(down, across)  # the 2-D Gaussian is separable: two 1-D ones, no grid
    region = out[y0:y1, x0:x1].astype(np.float32) * (1 - strength * falloff)[..., None]
    out[y0:y1, x0:x1] = (region + 0.5).astype(np.uint8)


def composite(rgba: np.ndarray, background: np.ndarray, placement: Placement, config: CompositeConfig,
              box: tuple[int, int, int, int] | None = None) -> dict:
    """RGBA source + RGB background -> {"image" RGB, "alpha" (the moved matte, uint8), "bg_mask"
    (255 - alpha)} at the background's size."""
    import cv2
    h, w = background.shape[:2]
    box = box or alpha_box(rgba[..., 3])
    fg, sx, sy = _scaled_crop(rgba, box, placement.scale)
    x, y = placement.offset[0] + sx, placement.offset[1] + sy
    # Clip the placed crop to the frame.
    cx0, cy0 = max(0, -x), max(0, -y)
    cx1, cy1 = min(fg.shape[1], w - x), min(fg.shape[0], h - y)
    out = background.copy()
    alpha_full = np.zeros((h, w), np.uint8)
    if cx1 > cx0 and cy1 > cy0:
        fg = fg[cy0:cy1, cx0:cx1]
        ox, oy = x + cx0, y + cy0
        # Contiguous planes by OpenCV: numpy's copy of a 3-of-4-channel view is ~10x slower.
        alpha, colour = cv2.extractChannel(fg, 3), cv2.cvtColor(fg, cv2.COLOR_RGBA2RGB)
        if config.feather_px > 0:
            blurred = cv2.GaussianBlur(alpha, (0, 0), config.feather_px)  # 9x Pillow's GaussianBlur, within 2 levels
            edge = np.nonzero(blurred < alpha)  # erode the edge only: solid interiors stay 255
            if len(edge[0]):  # indices once, so the work scales with the edge, not the crop
                colour[edge] = colour[edge].astype(np.uint32) * blurred[edge][:, None] // alpha[edge][:, None]
                alpha[edge] = blurred[edge]
        region = out[oy:oy + alpha.shape[0], ox:ox + alpha.shape[1]]
        if config.harmonize > 0:
            colour = _harmonize(colour, alpha, region, config.harmonize)
        if config.shadow > 0:
            bx0, by0, bx1, by1 = alpha_box(alpha) if cv2.countNonZero(alpha) else (0, 0, 1, 1)
            _shadow(out, ox + (bx0 + bx1) / 2, oy + by1 - 0.01 * (by1 - by0), bx1 - bx0, config.shadow)
            region = out[oy:oy + alpha.shape[0], ox:ox + alpha.shape[1]]
        out[oy:oy + alpha.shape[0], ox:ox + alpha.shape[1]] = _over_premultiplied(colour, region, alpha)
        alpha_full[oy:oy + alpha.shape[0], ox:ox + alpha.shape[1]] = alpha
    return {"image": out, "alpha": alpha_full, "bg_mask": 255 - alpha_full}


def _over_premultiplied(colour: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Premultiplied ``colour`` with ``alpha`` over an opaque ``background``:
    colour + round(background * (255 - alpha) / 255), saturating. Alpha 255 keeps the colour,
    alpha 0 the background."""
    import cv2
    uncovered = cv2.cvtColor(255 - np.ascontiguousarray(alpha), cv2.COLOR_GRAY2RGB)
    return cv2.add(np.ascontiguousarray(colour), cv2.multiply(np.ascontiguousarray(background), uncovered,
                                                              scale=1 / 255))


def composite_sample(rgba: np.ndarray, keypoints, background: np.ndarray, rng: np.random.Generator,
                     config: CompositeConfig, in_frame=None) -> dict:
    """One random draw (the placement) applied to the image, the alpha, the background mask, the
    keypoints and the pose image alike: what offline shards and training loaders both call.
    ``in_frame``: the record's in-frame flags, drawn when ``config.pose_joints`` is "in_frame";
    the result's ``in_frame`` is those flags after the placement (None when not drawn by them)."""
    import cv2

    size = (background.shape[1], background.shape[0])
    alpha = cv2.extractChannel(rgba, 3)  # contiguous, once: the alpha box is read from it twice
    placement = sample_placement(rng, alpha, size, config)
    out = composite(rgba, background, placement, config, alpha_box(alpha))
    moved = placement.move(keypoints, size)
    drawn = None
    if config.pose_joints == "in_frame" and in_frame is not None:
        flagged = np.array(keypoints, dtype=float)
        flagged[:, 2] = np.asarray(in_frame, float)
        drawn = placement.move(flagged, size)[:, 2] > 0  # points the placement moves out of frame drop out
    return {**out, "keypoints": moved, "pose_image": pose_image(moved, size, in_frame=drawn), "placement": placement,
            "in_frame": None if drawn is None else drawn.astype(int).tolist()}


def pose_image(keypoints, size: tuple[int, int], thickness: int | None = None, in_frame=None) -> np.ndarray:
    """The pose image a pose estimator's drawing gives (DWPose's and controlnet_aux's
    ``draw_bodypose``): on black, each limb of OPENPOSE_LIMBS as a filled ellipse ``thickness`` px
    wide in its OpenPose colour, the limbs dimmed to 60 %, then each keypoint as a full-colour
    disc of radius ``thickness``. ``thickness`` defaults to DWPose's 4 px at a 512 px shorter side,
    scaled with the resolution. Drawn: the visible keypoints (keypoints[:, 2] > 0), or, given
    ``in_frame`` (18 flags), every keypoint in frame, occluded ones included."""
    import cv2

    from render.contact_sheet import LIMB_COLOURS
    w, h = size
    thickness = thickness or max(1, round(4 * min(w, h) / 512))
    kp = np.asarray(keypoints, dtype=float)
    drawn = ((kp[:, 2] > 0) if in_frame is None else np.array(in_frame, bool)) & np.isfinite(kp[:, :2]).all(axis=1)
    canvas = np.zeros((h, w, 3), np.uint8)
    # Limbs in their colours dimmed to 60 % (what DWPose's canvas * 0.6 leaves, without a float
    # pass over the whole frame: only limbs are on the canvas before the discs).
    for colour, (a, b) in zip(LIMB_COLOURS, OPENPOSE_LIMBS):
        if drawn[a] and drawn[b]:
            (xa, ya), (xb, yb) = kp[a, :2], kp[b, :2]
            length = float(np.hypot(xa - xb, ya - yb))
            angle = int(np.degrees(np.arctan2(ya - yb, xa - xb)))
            polygon = cv2.ellipse2Poly((int((xa + xb) / 2), int((ya + yb) / 2)), (int(length / 2), thickness),
                                       angle, 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, tuple(int(c * 0.6) for c in colour))
    for i in np.flatnonzero(drawn):
        cv2.circle(canvas, (int(kp[i, 0]), int(kp[i, 1])), thickness, LIMB_COLOURS[i], thickness=-1)
    return canvas
