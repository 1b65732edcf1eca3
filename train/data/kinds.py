"""A decoded record -> model-ready arrays, per record kind: every image fitted into the configured
(width, height) by one scale and centred padding (the aspect kept, so keypoints stay true),
images as float32 CHW in [-1, 1], masks as float32 1xHxW in [0, 1] (``bg_mask``: 1 = background;
or both uint8, ``normalize=False``, for ``to_model`` to normalise on the GPU),
keypoints as float32 (18, 3) moved by the same fit, plus ``__key__``. The loader turns the arrays
into torch tensors; this module needs no torch.

``synthetic_pair``: the transparent ``src`` is composited on the fly (train.compositing,
reproducible from (seed, key, epoch)) when backgrounds are given, else on white; ``pose`` is drawn
at the target size from the fitted keypoints, ``std_pose`` likewise from the standardized render's. ``composited_pair``: the offline composite, its pose
image likewise drawn again at the target size. ``router_sample``: the scene image, each subject's
crop (on white) fitted into ``subject_size``, its instance mask at the scene's fit, stacked to
``max_subjects`` with ``subject_valid`` saying which are real, and the caption. ``multiview``:
the first ``views`` views (on white), their 4x4 camera poses and focal lengths (moved by the fit),
``view_valid`` for objects with fewer views. ``real_pair``: the standardized reference, the photo,
its caption and original size. ``photo``: a curated photo as the standardizer's source (the
photo, 1 - its person mask, the pose image of its keypoints). Stacks are zero-padded so batches collate."""
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


_TO_UNIT = (np.arange(256) / 127.5 - 1.0).astype(np.float32)  # uint8 -> [-1, 1], exactly rounded
_TO_FRACTION = (np.arange(256) / 255.0).astype(np.float32)      # uint8 -> [0, 1]


def _planes(image: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """HxW or HxWxC uint8 -> CxHxW, through ``table`` (float32) or kept uint8 when None. OpenCV
    splits the channels and maps them through the table: ~2.5x faster than numpy's strided cast."""
    import cv2

    planes = cv2.split(image) if image.ndim == 3 else (np.ascontiguousarray(image),)
    if table is None:
        return np.stack(planes)
    out = np.empty((len(planes), *image.shape[:2]), np.float32)
    for i, plane in enumerate(planes):
        cv2.LUT(plane, table, dst=out[i])  # written in place: out[i] is a contiguous float32 plane
    return out


def unit(image: np.ndarray) -> np.ndarray:
    """uint8 HxWxC -> float32 CxHxW in [-1, 1]."""
    return _planes(image, _TO_UNIT)


def mask01(mask: np.ndarray) -> np.ndarray:
    """uint8 HxW -> float32 1xHxW in [0, 1]."""
    return _planes(mask, _TO_FRACTION)


def on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


IMAGE_FIELDS = ("image", "pose", "std", "std_pose", "subjects", "views", "ref", "target")  # -> [-1, 1]
MASK_FIELDS = ("bg_mask", "masks")                                              # -> [0, 1]


def to_model(batch: dict, device=None) -> dict:
    """A collated batch -> on ``device``, with uint8 image and mask fields (decoders made with
    ``normalize=False``) normalised there, as ``normalize=True`` would have done in the worker:
    on a GPU this moves a quarter of the bytes through the DataLoader and the host-to-device copy,
    and does the arithmetic where it is cheap. Float fields are only moved."""
    import torch

    out = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True) if device is not None else value
            if value.dtype == torch.uint8 and name in IMAGE_FIELDS:
                value = value.float().div_(127.5).sub_(1.0)
            elif value.dtype == torch.uint8 and name in MASK_FIELDS:
                value = value.float().div_(255.0)
        out[name] = value
    return out


class Decoder:
    """What every kind's decoder shares: the target size, the padding fill and the output form:
    ``normalize=True`` gives float32 images in [-1, 1] and masks in [0, 1]; False keeps both
    uint8 (CxHxW all the same) for ``to_model`` to normalise on the device."""

    def __init__(self, kind: str, size: tuple[int, int], pad: int = 255, normalize: bool = True):
        self.kind, self.size, self.pad, self.normalize = kind, tuple(size), pad, normalize
        self.dtype = np.float32 if normalize else np.uint8

    def image(self, image: np.ndarray) -> np.ndarray:
        return _planes(image, _TO_UNIT if self.normalize else None)

    def mask(self, mask: np.ndarray) -> np.ndarray:
        return _planes(mask, _TO_FRACTION if self.normalize else None)

    def fitted(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """An RGB image fitted into ``size`` (the decoder's by default) on the padding, as CxHxW."""
        return self.image(place(image, size or self.size, self.pad))


class PairDecoder(Decoder):
    """synthetic_pair and composited_pair -> image, bg_mask, pose, keypoints (the source's), std and
    std_pose (the standardized target and its pose image, what the pose guider takes) (+ __key__).
    A character's standardized render is the same in all its pairs: the stream hands over the
    same array for the same bytes (``repeated_members``), and its target tensors are made once."""

    repeated_members = ("std.png",)

    def __init__(self, kind: str, size: tuple[int, int], backgrounds=None, seed: int = 0,
                 composite: CompositeConfig = CompositeConfig(), pad: int = 255, normalize: bool = True):
        super().__init__(kind, size, pad, normalize)
        self.pose_joints = composite.pose_joints
        self.composite = OnTheFlyComposite(backgrounds, composite, seed=seed) if backgrounds is not None else None
        self._target = (None, None, None)  # (std array, its json, the target tensors made of them)

    def _pose(self, keypoints: np.ndarray, side: dict) -> np.ndarray:
        """The pose image of fitted keypoints, drawn as the offline composites draw theirs."""
        flags = side.get("in_frame") if self.pose_joints == "in_frame" else None
        return self.image(pose_image(keypoints, self.size, in_frame=flags))

    def _targets(self, std_image: np.ndarray, std_meta: dict) -> dict:
        """std and std_pose, made once per standardized render (the same array and json again)."""
        image, meta, made = self._target
        if image is std_image and meta == std_meta:
            return made
        std_kp = fit_keypoints(std_meta["keypoints"], (std_image.shape[1], std_image.shape[0]), self.size)
        made = {"std": self.fitted(std_image), "std_pose": self._pose(std_kp, std_meta)}
        for value in made.values():
            value.setflags(write=False)
        self._target = (std_image, std_meta, made)
        return made

    def __call__(self, record: dict, epoch: int = 0) -> dict:
        meta = record["json"]
        target = self._targets(record["std.png"], meta["std"])
        if self.composite is not None:  # composited straight into the target frame: nothing to fit
            self.composite.set_epoch(epoch)
            out = self.composite(record, self.size)
            return {"__key__": record["__key__"], "image": self.image(out["image"]), "bg_mask": self.mask(out["bg_mask"]),
                    "pose": self.image(out["pose_image"]), "keypoints": out["keypoints"].astype(np.float32), **target}
        keypoints = meta["src"]["keypoints"]
        if self.kind == "synthetic_pair":
            rgba = record["src.png"]
            image, bg_mask = on_white(rgba), 255 - rgba[..., 3]
        else:
            image, bg_mask = record["src.jpg"], record["src_bgmask.png"]
        kp = fit_keypoints(keypoints, (image.shape[1], image.shape[0]), self.size)
        return {"__key__": record["__key__"], "image": self.fitted(image),
                "bg_mask": self.mask(place(np.ascontiguousarray(bg_mask), self.size, 255, Image.BILINEAR)),
                "pose": self._pose(kp, meta["src"]), "keypoints": kp, **target}


class RouterDecoder(Decoder):
    """router_sample -> image, subjects (S,3,h,w), masks (S,H,W), subject_valid (S,), caption."""

    def __init__(self, kind: str, size: tuple[int, int], subject_size: tuple[int, int] | None = None,
                 max_subjects: int = 4, pad: int = 255, normalize: bool = True):
        super().__init__(kind, size, pad, normalize)
        self.max_subjects, self.subject_size = max_subjects, tuple(subject_size or size)

    def __call__(self, record: dict, epoch: int = 0) -> dict:
        count = len(record["json"]["subjects"])
        if count > self.max_subjects:
            raise ValueError(f"{count} subjects; this decoder stacks at most {self.max_subjects}")
        (w, h), (sw, sh) = self.size, self.subject_size
        subjects = np.zeros((self.max_subjects, 3, sh, sw), self.dtype)
        masks = np.zeros((self.max_subjects, h, w), self.dtype)
        for i in range(count):
            subjects[i] = self.fitted(on_white(record[f"subj{i}.png"]), self.subject_size)
            masks[i] = self.mask(place(record[f"mask{i}.png"], self.size, 0, Image.NEAREST))[0]
        valid = (np.arange(self.max_subjects) < count).astype(np.float32)
        return {"__key__": record["__key__"], "image": self.fitted(record["image.jpg"]),
                "subjects": subjects, "masks": masks, "subject_valid": valid, "caption": record["txt"]}


class MultiviewDecoder(Decoder):
    """multiview -> views (V,3,H,W) on white, cameras (V,4,4), focal (V,) in target pixels, view_valid (V,)."""

    def __init__(self, kind: str, size: tuple[int, int], views: int = 4, pad: int = 255, normalize: bool = True):
        super().__init__(kind, size, pad, normalize)
        self.views = views

    def __call__(self, record: dict, epoch: int = 0) -> dict:
        meta_views = record["json"]["views"][:self.views]
        w, h = self.size
        views = np.zeros((self.views, 3, h, w), self.dtype)
        cameras = np.tile(np.eye(4, dtype=np.float32), (self.views, 1, 1))
        focal = np.zeros(self.views, np.float32)
        for i, view in enumerate(meta_views):
            image = record[f"view{i}.png"]
            scale = fit_box((image.shape[1], image.shape[0]), self.size)[0]
            views[i] = self.fitted(on_white(image))
            cameras[i] = np.asarray(view["camera"]["pose"], dtype=np.float32)
            focal[i] = float(view["camera"]["focal_px"]) * scale
        valid = (np.arange(self.views) < len(meta_views)).astype(np.float32)
        return {"__key__": record["__key__"], "views": views, "cameras": cameras, "focal": focal, "view_valid": valid}


class RealPairDecoder(Decoder):
    """real_pair -> ref (the standardized reference, at ``ref_size``), target (the photo), caption,
    original_size (the photo's (height, width), for SDXL's size conditioning)."""

    def __init__(self, kind: str, size: tuple[int, int], ref_size: tuple[int, int] | None = None, pad: int = 255,
                 normalize: bool = True):
        super().__init__(kind, size, pad, normalize)
        self.ref_size = tuple(ref_size or size)

    def __call__(self, record: dict, epoch: int = 0) -> dict:
        target = record["target.jpg"]
        return {"__key__": record["__key__"], "ref": self.fitted(record["ref.png"], self.ref_size),
                "target": self.fitted(target), "caption": record["txt"],
                "original_size": np.array(target.shape[:2], np.float32)}


class PhotoDecoder(Decoder):
    """photo (a curated real photo) -> what the standardizer takes of a source, as for the pairs:
    image (the photo fitted), bg_mask (1 - the person mask, fitted; the padding is background),
    pose (the pose image of its OpenPose-18 keypoints, drawn as the composites' are), keypoints."""

    def __call__(self, record: dict, epoch: int = 0) -> dict:
        image, mask = record["image.jpg"], record["mask.png"]
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask.png is {mask.shape[1]}x{mask.shape[0]}, image.jpg {image.shape[1]}x{image.shape[0]}")
        kp = fit_keypoints(record["json"]["keypoints"], (image.shape[1], image.shape[0]), self.size)
        return {"__key__": record["__key__"], "image": self.fitted(image),
                "bg_mask": self.mask(place(np.ascontiguousarray(255 - mask), self.size, 255, Image.BILINEAR)),
                "pose": self.image(pose_image(kp, self.size)), "keypoints": kp}


KINDS = {"synthetic_pair": PairDecoder, "composited_pair": PairDecoder, "router_sample": RouterDecoder,
         "multiview": MultiviewDecoder, "real_pair": RealPairDecoder, "photo": PhotoDecoder}


def decoder_for(kind: str, size: tuple[int, int], **options):
    """The decoder of ``kind`` records at ``size`` = (width, height). Options: pad (the fill of the
    padding, 0-255); normalize (False: uint8 images and masks, normalised on the device by
    ``to_model``); synthetic_pair: backgrounds, seed, composite (on-the-fly compositing);
    router_sample: subject_size, max_subjects; multiview: views; real_pair: ref_size."""
    if kind not in KINDS:
        raise NotImplementedError(f"no training decoder for {kind!r} records yet (have: {', '.join(KINDS)})")
    return KINDS[kind](kind, size, **options)
