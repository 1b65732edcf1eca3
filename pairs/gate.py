"""The quality gate of real pairs: is the standardized reference still a usable picture of the
photo's person? Four checks, each a score against a threshold of ``GateConfig`` and each one
that can be left out of ``checks``:

- ``foreground``: the fraction of the reference that is not white (the person on its white
  background); a reference that lost the person is (nearly) blank;
- ``face``: curate.people's face detector finds a face on the reference (its confidence);
- ``pose``: curate.people's pose estimator on the reference against the checkpoint's standard
  pose: the mean distance between the joints both have, after each set is centred and scaled to
  unit spread (so the reference's size and place in the frame do not count, its pose does);
- ``identity``: cosine similarity of image embeddings between the photo's person (masked onto
  white, cropped) and the reference (cropped to its foreground): a CLIP image encoder (the
  standardizer's own by default, or any by hub id or folder), or ``hsv-histogram``, OpenCV's
  hue-saturation histogram of the foreground (square-rooted: the cosine is the Bhattacharyya
  coefficient), which needs no weights and tells clothing and skin colours apart.

``judge`` scores every enabled check and returns the first failure as ``"gate-NAME: detail"``
with all the scores, so every reject carries its reason and its numbers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHECKS = ("foreground", "face", "pose", "identity")
WHITE_DISTANCE = 24  # a pixel is foreground when some channel is this far below 255


@dataclass(frozen=True)
class GateConfig:
    """``--set gate.NAME=VALUE``; ``checks`` lists the checks that run (the others are off)."""
    checks: tuple[str, ...] = CHECKS
    min_foreground: float = 0.04      # fraction of the reference's pixels that are not white
    min_face_score: float = 0.5       # the face detector's confidence on the reference
    max_pose_distance: float = 0.15   # normalized keypoint distance to the standard pose (A-pose renders ~0.05, posed 0.19-0.49)
    min_pose_joints: int = 8          # joints found on the reference and present in the standard pose
    min_similarity: float = 0.7       # cosine similarity of the person crop's and the reference's embeddings
    detector: str = "mediapipe"       # curate.people detector for the face and the pose (mediapipe or opencv)
    # "": the standardizer's CLIP image encoder; hsv-histogram; or a CLIPVisionModelWithProjection (hub id or folder)
    embedder: str = ""
    # false: score every check and record the verdict (json gate_failed) but reject nothing (calibration, pilots)
    enforce: bool = True

    def problems(self) -> list[str]:
        from curate.people import DETECTORS

        out = [f"gate.checks: unknown check {c!r}; use any of {', '.join(CHECKS)}" for c in self.checks
               if c not in CHECKS]
        if self.detector not in DETECTORS:
            out.append(f"gate.detector={self.detector!r}: use one of {', '.join(DETECTORS)}")
        if "pose" in self.checks and self.detector != "mediapipe":
            out.append(f"gate.detector={self.detector} finds no keypoints: the pose check needs mediapipe "
                       f"(or take pose out of gate.checks)")
        if not 0 <= self.min_foreground < 1:
            out.append(f"gate.min_foreground={self.min_foreground}: use a fraction in [0, 1)")
        if not 0 <= self.min_face_score <= 1:
            out.append(f"gate.min_face_score={self.min_face_score}: use a confidence in [0, 1]")
        if self.max_pose_distance <= 0:
            out.append(f"gate.max_pose_distance={self.max_pose_distance}: use a distance > 0 (~0.15)")
        if not 2 <= self.min_pose_joints <= 18:
            out.append(f"gate.min_pose_joints={self.min_pose_joints}: use 2..18")
        if not -1 <= self.min_similarity <= 1:
            out.append(f"gate.min_similarity={self.min_similarity}: a cosine similarity is in [-1, 1]")
        return out

    @property
    def needs_detector(self) -> bool:
        return "face" in self.checks or "pose" in self.checks


def foreground_fraction(image: np.ndarray) -> float:
    """The fraction of an RGB image's pixels that are not (near) white."""
    return float((image.min(axis=2) < 255 - WHITE_DISTANCE).mean())


def pose_distance(found: np.ndarray, standard: np.ndarray) -> tuple[float, int]:
    """(normalized distance, joints compared) between (18, 3) keypoint sets: over the joints
    visible in both, each set centred on its mean and divided by its RMS spread; the mean
    Euclidean distance of the joints then (0: the same pose at any size and place)."""
    both = (found[:, 2] > 0) & (standard[:, 2] > 0)
    count = int(both.sum())
    if count < 2:
        return float("inf"), count

    def normalized(points):
        centred = points[both, :2] - points[both, :2].mean(0)
        return centred / max(float(np.sqrt((centred ** 2).sum(1).mean())), 1e-6)

    return float(np.linalg.norm(normalized(found) - normalized(standard), axis=1).mean()), count


def person_crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The photo's person on white (its soft mask as alpha), cropped to the mask's box."""
    alpha = mask.astype(np.float32)[..., None] / 255.0
    on_white = np.round(image * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return crop_to(on_white, mask > 127)


def crop_to(image: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``image`` cropped to the box of ``where`` (all of it when ``where`` is empty)."""
    rows, cols = np.flatnonzero(where.any(1)), np.flatnonzero(where.any(0))
    if not len(rows):
        return image
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def square_on_white(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` fitted (aspect kept) into a white ``side`` x ``side`` square, for the embedder."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = side / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.full((side, side, 3), 255, np.uint8)
    ox, oy = (side - nw) // 2, (side - nh) // 2
    out[oy:oy + nh, ox:ox + nw] = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BICUBIC))
    return out


HISTOGRAM = "hsv-histogram"
HISTOGRAM_BINS = (18, 8)  # hue, saturation; brightness left out: lighting changes between photo and reference


def histogram_embeddings(images: list[np.ndarray]) -> np.ndarray:
    """Unit vectors of the square roots of each image's hue-saturation histogram over its
    non-white pixels: their dot product is the Bhattacharyya coefficient of the histograms."""
    import cv2

    out = []
    for image in images:
        foreground = (image.min(axis=2) < 255 - WHITE_DISTANCE).astype(np.uint8)
        hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1], foreground, list(HISTOGRAM_BINS), [0, 180, 0, 256]).ravel()
        root = np.sqrt(hist / max(float(hist.sum()), 1.0))
        out.append(root / max(float(np.linalg.norm(root)), 1e-9))
    return np.stack(out)


class Embedder:
    """A CLIP image encoder (``CLIPVisionModelWithProjection``) -> unit image embeddings."""

    def __init__(self, image_encoder, device):
        self.encoder, self.device = image_encoder, device

    @classmethod
    def load(cls, name: str, device) -> "Embedder":
        from transformers import CLIPVisionModelWithProjection

        return cls(CLIPVisionModelWithProjection.from_pretrained(name).to(device).eval(), device)

    def __call__(self, images: list[np.ndarray]):
        import torch

        from train.models.standardizer import clip_image_embeds

        side = self.encoder.config.image_size
        batch = np.stack([square_on_white(image, side) for image in images]).astype(np.float32) / 127.5 - 1.0
        with torch.no_grad():
            embeds = clip_image_embeds(self.encoder, torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device))
        return torch.nn.functional.normalize(embeds[:, 0].float(), dim=-1).cpu().numpy()


def similarities(embedder, photos: list[np.ndarray], masks: list[np.ndarray],
                 references: list[np.ndarray]) -> list[float]:
    """Cosine similarity of each photo's person crop and its reference (cropped to its foreground);
    ``embedder``: images -> unit vectors (an ``Embedder`` or ``histogram_embeddings``)."""
    crops = [person_crop(photo, mask) for photo, mask in zip(photos, masks)]
    refs = [crop_to(ref, ref.min(axis=2) < 255 - WHITE_DISTANCE) for ref in references]
    embeds = embedder(crops + refs)
    n = len(crops)
    return [round(float(embeds[i] @ embeds[n + i]), 4) for i in range(n)]


def judge(config: GateConfig, reference: np.ndarray, standard_pose: np.ndarray, detector=None,
          similarity: float | None = None) -> tuple[str | None, dict]:
    """(the first failing check's reason or None, every enabled check's score) for one reference;
    ``similarity``: its identity score, computed batched beforehand (``similarities``)."""
    scores: dict = {}
    reasons: list[str] = []
    if "foreground" in config.checks:
        scores["foreground"] = round(foreground_fraction(reference), 4)
        if scores["foreground"] < config.min_foreground:
            reasons.append(f"gate-foreground: the reference lost the person ({scores['foreground']:.1%} not white "
                           f"< gate.min_foreground={config.min_foreground})")
    found = detector.detect(reference) if config.needs_detector else None
    if "face" in config.checks:
        scores["face"] = round(found.face_score if found.face_box is not None else 0.0, 3)
        if scores["face"] < config.min_face_score:
            reasons.append(f"gate-face: no face found on the reference (score {scores['face']} "
                           f"< gate.min_face_score={config.min_face_score})")
    if "pose" in config.checks:
        distance, joints = pose_distance(found.keypoints, standard_pose) if found.keypoints is not None \
            else (float("inf"), 0)
        scores["pose_joints"] = joints
        scores["pose"] = round(distance, 4) if np.isfinite(distance) else None
        if joints < config.min_pose_joints:
            reasons.append(f"gate-pose: {joints} joints found on the reference (< gate.min_pose_joints="
                           f"{config.min_pose_joints})")
        elif distance > config.max_pose_distance:
            reasons.append(f"gate-pose: not in the standard A-pose (distance {distance:.3f} > "
                           f"gate.max_pose_distance={config.max_pose_distance})")
    if "identity" in config.checks:
        scores["identity"] = similarity
        if similarity is None or similarity < config.min_similarity:
            reasons.append(f"gate-identity: the reference no longer looks like the photo's person (similarity "
                           f"{similarity} < gate.min_similarity={config.min_similarity})")
    return (reasons[0] if reasons else None), scores
