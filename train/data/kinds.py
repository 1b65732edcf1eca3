"""A decoded record -> model-ready arrays, per record kind: every image fitted into the configured
(width, height) by one scale and centred padding (the aspect kept, so keypoints stay true),
images as float32 CHW in [-1, 1], masks as float32 1xHxW in [0, 1] (``bg_mask``: 1 = background),
keypoints as float32 (18, 3) moved by the same fit, plus ``__key__``. The loader turns the arrays
into torch tensors; this module needs no torch.

``synthetic_pair``: the transparent ``src`` is composited on the fly (train.compositing,
reproducible from (seed, key, epoch)) when backgrounds are given, else on white; ``pose`` is drawn
at the target size from the fitted keypoints. ``composited_pair``: the offline composite, its pose
image likewise drawn again at the target size. ``router_sample``: the scene image, each subject's
crop (on white) fitted into ``subject_size``, its instance mask at the scene's fit, stacked to
``max_subjects`` with ``subject_valid`` saying which are real, and the caption. ``multiview``:
the first ``views`` views (on white), their 4x4 camera poses and focal lengths (moved by the fit),
``view_valid`` for objects with fewer views. Stacks are zero-padded so batches collate."""
from __future__ import annotations

import numpy as np
from PIL import Image

from render.compositing.composite import CompositeConfig, pose_image
from train.compositing import OnTheFlyComposite


def fit_box(size: tuple[int, int], target: tuple[int, int]) -> tuple[float, int, int, int, int]:
    """(scale, x offset, y offset, scaled width, scaled height) fitting ``size`` into ``target``."""
    (w, h), (tw, th) = size, target
    scale = min(tw / w, th / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return scale, (tw - nw) // 2, (th - nh) // 2, nw, nh


def place(image: np.ndarray, target: tuple[int, int], fill, resample=Image.BICUBIC) -> np.ndarray:
    """``image`` (uint8 HxW or HxWxC) fitted into ``target`` on a ``fill`` canvas."""
    _, ox, oy, nw, nh = fit_box((image.shape[1], image.shape[0]), target)
    scaled = np.asarray(Image.fromarray(image).resize((nw, nh), resample)) if (nw, nh) != image.shape[1::-1] else image
    out = np.empty((target[1], target[0], *image.shape[2:]), np.uint8)
    out[...] = fill
    out[oy:oy + nh, ox:ox + nw] = scaled
    return out


def fit_keypoints(keypoints, size: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    scale, ox, oy, _, _ = fit_box(size, target)
    kp = np.array(keypoints, dtype=np.float32).reshape(-1, 3)
    kp[:, 0] = kp[:, 0] * scale + ox
    kp[:, 1] = kp[:, 1] * scale + oy
    return kp


def unit(image: np.ndarray) -> np.ndarray:
    """uint8 HxWxC -> float32 CxHxW in [-1, 1]."""
    return np.ascontiguousarray((image.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1))


def mask01(mask: np.ndarray) -> np.ndarray:
    """uint8 HxW -> float32 1xHxW in [0, 1]."""
    return (mask.astype(np.float32) / 255.0)[None]


def on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


class PairDecoder:
    """synthetic_pair and composited_pair -> image, bg_mask, pose, keypoints, std (+ __key__)."""

    def __init__(self, kind: str, size: tuple[int, int], backgrounds=None, seed: int = 0,
                 composite: CompositeConfig = CompositeConfig(), pad: int = 255):
        self.kind, self.size, self.pad = kind, tuple(size), pad
        self.composite = OnTheFlyComposite(backgrounds, composite, seed=seed) if backgrounds is not None else None

    def __call__(self, record: dict, epoch: int = 0) -> dict:
        meta = record["json"]
        if self.kind == "synthetic_pair":
            rgba = record["src.png"]
            if self.composite is not None:
                self.composite.set_epoch(epoch)
                out = self.composite(record)
                image, bg_mask, keypoints = out["image"], out["bg_mask"], out["keypoints"]
            else:
                image, bg_mask, keypoints = on_white(rgba), 255 - rgba[..., 3], meta["src"]["keypoints"]
        else:
            image, bg_mask, keypoints = record["src.jpg"], record["src_bgmask.png"], meta["src"]["keypoints"]
        src_size = (image.shape[1], image.shape[0])
        kp = fit_keypoints(keypoints, src_size, self.size)
        return {"__key__": record["__key__"],
                "image": unit(place(image, self.size, self.pad)),
                "bg_mask": mask01(place(np.ascontiguousarray(bg_mask), self.size, 255, Image.BILINEAR)),
                "pose": unit(pose_image(kp, self.size)),
                "keypoints": kp,
                "std": unit(place(record["std.png"], self.size, self.pad))}


class RouterDecoder:
    """router_sample -> image, subjects (S,3,h,w), masks (S,H,W), subject_valid (S,), caption."""

    def __init__(self, kind: str, size: tuple[int, int], subject_size: tuple[int, int] | None = None,
                 max_subjects: int = 4, pad: int = 255):
        self.kind, self.size, self.pad, self.max_subjects = kind, tuple(size), pad, max_subjects
        self.subject_size = tuple(subject_size or size)

    def __call__(self, record: dict, epoch: int = 0) -> dict:
        count = len(record["json"]["subjects"])
        if count > self.max_subjects:
            raise ValueError(f"{count} subjects; this decoder stacks at most {self.max_subjects}")
        (w, h), (sw, sh) = self.size, self.subject_size
        subjects = np.zeros((self.max_subjects, 3, sh, sw), np.float32)
        masks = np.zeros((self.max_subjects, h, w), np.float32)
        for i in range(count):
            subjects[i] = unit(place(on_white(record[f"subj{i}.png"]), self.subject_size, self.pad))
            masks[i] = mask01(place(record[f"mask{i}.png"], self.size, 0, Image.NEAREST))[0]
        valid = (np.arange(self.max_subjects) < count).astype(np.float32)
        return {"__key__": record["__key__"], "image": unit(place(record["image.jpg"], self.size, self.pad)),
                "subjects": subjects, "masks": masks, "subject_valid": valid, "caption": record["txt"]}


class MultiviewDecoder:
    """multiview -> views (V,3,H,W) on white, cameras (V,4,4), focal (V,) in target pixels, view_valid (V,)."""

    def __init__(self, kind: str, size: tuple[int, int], views: int = 4, pad: int = 255):
        self.kind, self.size, self.views, self.pad = kind, tuple(size), views, pad

    def __call__(self, record: dict, epoch: int = 0) -> dict:
        meta_views = record["json"]["views"][:self.views]
        w, h = self.size
        views = np.zeros((self.views, 3, h, w), np.float32)
        cameras = np.tile(np.eye(4, dtype=np.float32), (self.views, 1, 1))
        focal = np.zeros(self.views, np.float32)
        for i, view in enumerate(meta_views):
            image = record[f"view{i}.png"]
            scale = fit_box((image.shape[1], image.shape[0]), self.size)[0]
            views[i] = unit(place(on_white(image), self.size, self.pad))
            cameras[i] = np.asarray(view["camera"]["pose"], dtype=np.float32)
            focal[i] = float(view["camera"]["focal_px"]) * scale
        valid = (np.arange(self.views) < len(meta_views)).astype(np.float32)
        return {"__key__": record["__key__"], "views": views, "cameras": cameras, "focal": focal, "view_valid": valid}


KINDS = {"synthetic_pair": PairDecoder, "composited_pair": PairDecoder, "router_sample": RouterDecoder,
         "multiview": MultiviewDecoder}


def decoder_for(kind: str, size: tuple[int, int], **options):
    """The decoder of ``kind`` records at ``size`` = (width, height). Options: pad (the fill of the
    padding, 0-255); synthetic_pair: backgrounds, seed, composite (on-the-fly compositing);
    router_sample: subject_size, max_subjects; multiview: views."""
    if kind not in KINDS:
        raise NotImplementedError(f"no training decoder for {kind!r} records yet (have: {', '.join(KINDS)})")
    return KINDS[kind](kind, size, **options)
