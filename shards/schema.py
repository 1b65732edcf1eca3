"""Record schemas. A record is a dict of WebDataset members (``src.png``, ``json`` …) plus
``__key__``; a schema names the members a kind must have and checks a decoded record."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

OPENPOSE18 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)


@dataclass(frozen=True)
class Schema:
    name: str
    version: int
    members: dict[str, str]  # member extension -> expected decoded form ("RGBA", "RGB", "L", "json", "text")
    check_meta: Callable[[dict, dict], list[str]] = field(default=lambda meta, record: [])
    # Members repeated per item, e.g. {"subj{i}.png": "RGBA"}; json[count_key] says how many.
    indexed: dict[str, str] = field(default_factory=dict)
    count_key: str = ""
    # Members a record may carry or not, e.g. the caption and its lineage that ``pairforge caption`` adds.
    optional: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{self.name}/{self.version}"

    def expected_members(self, record: dict) -> dict[str, str]:
        """Member -> form for this record (indexed members expanded by the count in its json)."""
        members = dict(self.members)
        meta = record.get("json")
        count = len(meta.get(self.count_key, [])) if self.indexed and isinstance(meta, dict) else 0
        for pattern, form in self.indexed.items():
            members.update({pattern.format(i=i): form for i in range(count)})
        return members

    def validate(self, record: dict) -> list[str]:
        """Problems with a decoded record (empty when it conforms)."""
        problems = []
        expected = self.expected_members(record)
        expected.update({member: form for member, form in self.optional.items() if member in record})
        for member, form in expected.items():
            if member not in record:
                problems.append(f"missing member {member!r}")
                continue
            value = record[member]
            if form in ("RGBA", "RGB"):
                channels = 4 if form == "RGBA" else 3
                if not (isinstance(value, np.ndarray) and value.ndim == 3 and value.shape[2] == channels
                        and value.dtype == np.uint8):
                    problems.append(f"{member} is not an 8-bit {form} image")
            elif form == "L":
                if not (isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype == np.uint8):
                    problems.append(f"{member} is not an 8-bit single-channel image")
            elif form == "json" and not isinstance(value, dict):
                problems.append(f"{member} is not a JSON object")
            elif form == "text" and not isinstance(value, str):
                problems.append(f"{member} is not text")
        extra = set(record) - set(expected) - {"__key__", "__url__"}
        if extra:
            problems.append(f"unexpected members {sorted(extra)}")
        if not problems and "json" in self.members:
            problems += self.check_meta(record["json"], record)
        return problems


# What ``pairforge caption`` adds to a record it captions in place: the caption, and the
# captioner's lineage (model, revision, hash, prompt, settings) beside the untouched json.
CAPTION_MEMBERS = {"txt": "text", "caption.json": "json"}


def _keypoints_problems(name: str, keypoints, width: int, height: int) -> list[str]:
    arr = np.asarray(keypoints, dtype=float) if isinstance(keypoints, list) else None
    if arr is None or arr.shape != (len(OPENPOSE18), 3):
        return [f"{name} must be {len(OPENPOSE18)} x [x, y, visible]"]
    visible = arr[:, 2] > 0
    inside = (arr[:, 0] >= 0) & (arr[:, 0] < width) & (arr[:, 1] >= 0) & (arr[:, 1] < height)
    if np.any(visible & ~inside):
        return [f"{name}: a visible keypoint lies outside the image"]
    return []


def _synthetic_pair_meta(meta: dict, record: dict) -> list[str]:
    problems = []
    required = ("schema", "character_id", "pose_id", "view_id", "seed", "renderer", "src", "std", "split")
    missing = [k for k in required if k not in meta]
    if missing:
        return [f"json lacks {missing}"]
    if meta["schema"] != SYNTHETIC_PAIR.tag:
        problems.append(f"json schema {meta['schema']!r} is not {SYNTHETIC_PAIR.tag!r}")
    if meta["split"] not in ("train", "test"):
        problems.append(f"split {meta['split']!r} is not train/test")
    if not {"name", "version"} <= set(meta["renderer"]):
        problems.append("renderer needs name and version")
    for side, image in (("src", record["src.png"]), ("std", record["std.png"])):
        height, width = image.shape[:2]
        part = meta[side]
        if "spec" not in part or "keypoints" not in part:
            problems.append(f"json.{side} needs spec and keypoints")
            continue
        problems += _keypoints_problems(f"{side}.keypoints", part["keypoints"], width, height)
    box = meta["std"].get("face_box")
    if not (isinstance(box, list) and len(box) == 4 and box[0] < box[2] and box[1] < box[3]):
        problems.append("std.face_box must be [x0, y0, x1, y1] with x0 < x1, y0 < y1")
    if record["std.png"].shape[:2] != record["src.png"].shape[:2]:
        problems.append("src.png and std.png differ in size")
    return problems


# synthetic_pair json: ``src`` and ``std`` each hold ``keypoints`` (18 x [x, y, visible], OpenPose-18
# order) and, since issue 13, ``in_frame`` (18 x 0/1: projects inside the image, in front of the
# camera) and ``occluded`` (18 x 0/1: in frame, but another body part covers it; a face landmark
# also when the back of the head does). visible = in_frame and not occluded: what a pose
# estimator would find. The standardized render shows every body joint; its ears may be hidden.
SYNTHETIC_PAIR = Schema(
    name="synthetic_pair",
    version=1,
    members={"src.png": "RGBA", "std.png": "RGB", "json": "json"},
    check_meta=_synthetic_pair_meta,
    optional=CAPTION_MEMBERS,
)

def _composited_pair_meta(meta: dict, record: dict) -> list[str]:
    required = ("schema", "character_id", "pose_id", "view_id", "seed", "split", "pair_key", "background",
                "placement", "src", "std")
    missing = [k for k in required if k not in meta]
    if missing:
        return [f"json lacks {missing}"]
    problems = [] if meta["schema"] == COMPOSITED_PAIR.tag else [f"json schema {meta['schema']!r} is not {COMPOSITED_PAIR.tag!r}"]
    height, width = record["src.jpg"].shape[:2]
    for member in ("src_bgmask.png", "src_pose.png", "std.png"):
        if record[member].shape[:2] != (height, width):
            problems.append(f"{member} is {record[member].shape[1]}x{record[member].shape[0]}, src.jpg {width}x{height}")
    problems += _keypoints_problems("src.keypoints", meta["src"].get("keypoints"), width, height)
    if not {"source", "name"} <= set(meta["background"]):
        problems.append("background needs source and name")
    return problems


COMPOSITED_PAIR = Schema(
    name="composited_pair",
    version=1,
    members={"src.jpg": "RGB", "src_bgmask.png": "L", "src_pose.png": "RGB", "std.png": "RGB", "json": "json"},
    check_meta=_composited_pair_meta,
    optional=CAPTION_MEMBERS,
)

def _router_sample_meta(meta: dict, record: dict) -> list[str]:
    missing = [k for k in ("schema", "subjects", "background", "seed", "split") if k not in meta]
    if missing:
        return [f"json lacks {missing}"]
    problems = [] if meta["schema"] == ROUTER_SAMPLE.tag else [f"json schema {meta['schema']!r} is not {ROUTER_SAMPLE.tag!r}"]
    subjects = meta["subjects"]
    if not 2 <= len(subjects) <= 4:
        problems.append(f"{len(subjects)} subjects; a router sample has 2 to 4")
    height, width = record["image.jpg"].shape[:2]
    masks = [record[f"mask{i}.png"] for i in range(len(subjects))]
    if any(m.shape != (height, width) for m in masks):
        problems.append("instance masks differ in size from image.jpg")
    elif masks:
        stacked = np.stack([m > 127 for m in masks])
        if (stacked.sum(0) > 1).any():
            problems.append("instance masks overlap")
        if any(not m.any() for m in stacked):
            problems.append("a subject has an empty instance mask")
    return problems


ROUTER_SAMPLE = Schema(
    name="router_sample",
    version=1,
    members={"image.jpg": "RGB", "txt": "text", "json": "json"},
    check_meta=_router_sample_meta,
    indexed={"subj{i}.png": "RGBA", "mask{i}.png": "L"},
    count_key="subjects",
    optional={"caption.json": "json"},
)

def _multiview_meta(meta: dict, record: dict) -> list[str]:
    missing = [k for k in ("schema", "object_id", "views", "renderer", "seed", "split") if k not in meta]
    if missing:
        return [f"json lacks {missing}"]
    problems = [] if meta["schema"] == MULTIVIEW.tag else [f"json schema {meta['schema']!r} is not {MULTIVIEW.tag!r}"]
    images = [record[f"view{i}.png"] for i in range(len(meta["views"]))]
    if not images:
        problems.append("a multiview record needs at least one view")
    elif len({image.shape for image in images}) > 1:
        problems.append("views differ in size")
    for i, (image, view) in enumerate(zip(images, meta["views"])):
        camera = view.get("camera", {}) if isinstance(view, dict) else {}
        if np.asarray(camera.get("pose", []), dtype=float).shape != (4, 4) or "focal_px" not in camera:
            problems.append(f"views[{i}].camera needs a 4x4 pose and focal_px")
        if not image[..., 3].any():
            problems.append(f"view{i}.png is empty (fully transparent)")
    return problems


MULTIVIEW = Schema(
    name="multiview",
    version=1,
    members={"json": "json"},
    check_meta=_multiview_meta,
    indexed={"view{i}.png": "RGBA"},
    count_key="views",
    optional=CAPTION_MEMBERS,
)

def _caption_meta(meta: dict, record: dict) -> list[str]:
    missing = [k for k in ("schema", "kind", "captioner") if k not in meta]
    if missing:
        return [f"json lacks {missing}"]
    return [] if meta["schema"] == CAPTION.tag else [f"json schema {meta['schema']!r} is not {CAPTION.tag!r}"]


# A sidecar of captions, keyed and sharded like the records it captions (``pairforge caption``).
CAPTION = Schema(name="caption", version=1, members={"txt": "text", "json": "json"}, check_meta=_caption_meta)

def _real_pair_meta(meta: dict, record: dict) -> list[str]:
    missing = [k for k in ("schema", "photo_id", "split") if k not in meta]
    if missing:
        return [f"json lacks {missing}"]
    return [] if meta["schema"] == REAL_PAIR.tag else [f"json schema {meta['schema']!r} is not {REAL_PAIR.tag!r}"]


# Stage II's pairs: the standardized reference the standardizer made from a photo, the photo
# itself (bytes as curated), its caption and the lineage (photo, standardizer, captioner) in json.
REAL_PAIR = Schema(name="real_pair", version=1,
                   members={"ref.png": "RGB", "target.jpg": "RGB", "txt": "text", "json": "json"},
                   check_meta=_real_pair_meta)

def _standardized_meta(meta: dict, record: dict) -> list[str]:
    missing = [k for k in ("schema", "source_key", "checkpoint_sha256") if k not in meta]
    if missing:
        return [f"json lacks {missing}"]
    return [] if meta["schema"] == STANDARDIZED.tag else [f"json schema {meta['schema']!r} is not {STANDARDIZED.tag!r}"]


# ``pairforge standardize``: the standardizer's output for one source record (keyed like it), at the
# source's size, with its lineage (source shard and key, checkpoint path and weights hash, sampler).
STANDARDIZED = Schema(name="standardized", version=1, members={"std.png": "RGB", "json": "json"},
                      check_meta=_standardized_meta)

def _photo_meta(meta: dict, record: dict) -> list[str]:
    missing = [k for k in ("schema", "source", "sha256", "keypoints", "face_box", "scores") if k not in meta]
    if missing:
        return [f"json lacks {missing}"]
    problems = [] if meta["schema"] == PHOTO.tag else [f"json schema {meta['schema']!r} is not {PHOTO.tag!r}"]
    height, width = record["image.jpg"].shape[:2]
    if record["mask.png"].shape != (height, width):
        problems.append(f"mask.png is {record['mask.png'].shape[1]}x{record['mask.png'].shape[0]}, image.jpg {width}x{height}")
    problems += _keypoints_problems("keypoints", meta["keypoints"], width, height)
    box = meta["face_box"]
    if not (isinstance(box, list) and len(box) == 4 and box[0] < box[2] and box[1] < box[3]):
        problems.append("face_box must be [x0, y0, x1, y1] with x0 < x1, y0 < y1")
    return problems


# ``pairforge curate photos``: a kept photo (bytes as curated: the original upright RGB JPEG, or
# re-encoded after conversion), the main person's soft mask, and json: source id and sha256,
# OpenPose-18 keypoints and face box in image pixels, the detector, every check's score
# (scores.phash: the 64-bit pHash the job's duplicate search used) and the thresholds.
PHOTO = Schema(name="photo", version=1, members={"image.jpg": "RGB", "mask.png": "L", "json": "json"},
               check_meta=_photo_meta, optional=CAPTION_MEMBERS)

def _curated_file_meta(meta: dict, record: dict) -> list[str]:
    missing = [k for k in ("schema", "source", "scores") if k not in meta]
    return [f"json lacks {missing}"] if missing else []


# The manifests of ``pairforge curate assets|backgrounds``: one json record per kept file (its
# path or URL, measurements and duplicate signature); rejects carry their reason in the shard
# manifest like any other stage's.
ASSET = Schema(name="asset", version=1, members={"json": "json"}, check_meta=_curated_file_meta)
BACKGROUND = Schema(name="background", version=1, members={"json": "json"}, check_meta=_curated_file_meta)

SCHEMAS = {schema.name: schema for schema in (SYNTHETIC_PAIR, COMPOSITED_PAIR, ROUTER_SAMPLE, MULTIVIEW, CAPTION, REAL_PAIR,
                                              STANDARDIZED, PHOTO, ASSET, BACKGROUND)}


def schema_named(name: str) -> Schema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown record schema {name!r}; known: {sorted(SCHEMAS)}") from None
