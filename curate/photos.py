"""Checks on real photos of people, each a pure function of a measurement and the config that
returns None (ok) or a reason ``"category: detail"``; and the whole per-photo pipeline that
decodes a photo once, at the working size the checks and the models need, and measures
everything on that one decode.

A kept photo becomes a ``photo`` record: the image (its original bytes when they are already
an upright RGB JPEG, else re-encoded after conversion), the person's mask, OpenPose-18
keypoints, the face box, the perceptual hash and every check's score. Duplicates are found
afterwards, over the whole job (curate.dedup), from the hashes in those records."""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageOps

from curate.dedup import hash_to_int
from curate.people import DETECTORS, Detection
from shards.encoding import encode_jpeg
from shards.schema import PHOTO

ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class PhotoChecks:
    """Every threshold of the photo checks (``--set checks.NAME=VALUE``)."""
    max_pixels: int = 60_000_000      # larger images are refused before decoding (decompression bombs)
    min_side: int = 384               # px, the shorter side after orientation
    min_aspect: float = 0.4           # width / height
    max_aspect: float = 2.5
    work_side: int = 512              # long side of the one decode the checks and the models see
    min_sharpness: float = 30.0       # variance of the Laplacian of the grey image at work_side
    min_brightness: float = 0.12      # mean luma, 0..1
    max_brightness: float = 0.92
    max_clipped: float = 0.5          # fraction of pixels crushed to black or blown to white
    detector: str = "mediapipe"       # mediapipe (pose, mask, faces) or opencv (HOG people, Haar faces)
    min_person_fraction: float = 0.04  # person mask area / image area
    min_keypoints: int = 6            # visible OpenPose-18 points (mediapipe only)
    max_people: int = 1
    min_face_fraction: float = 0.04   # face box height / image height
    near_duplicate_bits: int = 5      # pHash Hamming distance up to which two photos are one
    jpeg_quality: int = 95            # re-encoding of converted photos

    def problems(self) -> list[str]:
        out = []
        if self.detector not in DETECTORS:
            out.append(f"checks.detector={self.detector!r}: use one of {', '.join(DETECTORS)}")
        if not 0 < self.min_aspect < self.max_aspect:
            out.append("checks.min_aspect must be > 0 and below checks.max_aspect")
        if not 0 <= self.min_brightness < self.max_brightness <= 1:
            out.append("checks.min_brightness/max_brightness must satisfy 0 <= min < max <= 1")
        if not 0 <= self.near_duplicate_bits < 32:
            out.append("checks.near_duplicate_bits must be in 0..31")
        if self.work_side < 64 or self.min_side < 1 or self.max_pixels < 1:
            out.append("checks.work_side must be >= 64, checks.min_side and checks.max_pixels >= 1")
        return out


class PhotoRejected(ValueError):
    """A photo that fails a check; the message is the reason."""


@dataclass
class Decoded:
    """One photo decoded once: the upright RGB image at the working size, its full size, and
    how it had to be converted (empty when the bytes can be kept as they are)."""
    work: np.ndarray
    size: tuple[int, int]
    conversions: list[str] = field(default_factory=list)
    source_format: str = ""


# --- pure checks: measurement (+ config) -> None or a reason ------------------------------------

def check_pixels(width: int, height: int, c: PhotoChecks) -> str | None:
    if width * height > c.max_pixels:
        return f"decode: {width}x{height} is over checks.max_pixels={c.max_pixels} (decompression bomb?)"
    return None


def check_size(width: int, height: int, c: PhotoChecks) -> str | None:
    if min(width, height) < c.min_side:
        return f"size: {width}x{height}, shorter side under checks.min_side={c.min_side}"
    aspect = width / height
    if not c.min_aspect <= aspect <= c.max_aspect:
        return f"aspect: {aspect:.2f} outside [{c.min_aspect}, {c.max_aspect}]"
    return None


def check_sharpness(sharpness: float, c: PhotoChecks) -> str | None:
    if sharpness < c.min_sharpness:
        return f"blur: sharpness {sharpness:.1f} < checks.min_sharpness={c.min_sharpness}"
    return None


def check_exposure(brightness: float, clipped: float, c: PhotoChecks) -> str | None:
    if brightness < c.min_brightness:
        return f"exposure: too dark (mean {brightness:.2f} < {c.min_brightness})"
    if brightness > c.max_brightness:
        return f"exposure: too bright (mean {brightness:.2f} > {c.max_brightness})"
    if clipped > c.max_clipped:
        return f"exposure: {clipped:.0%} of pixels clipped (> {c.max_clipped:.0%})"
    return None


def check_person(found: Detection, image_area: int, c: PhotoChecks) -> str | None:
    if found.people == 0 or found.person_area == 0:
        return "person: no person found"
    if found.people > c.max_people:
        return f"people: {found.people} people (at most {c.max_people})"
    if found.person_area / image_area < c.min_person_fraction:
        return f"person: too small ({found.person_area / image_area:.1%} of the image)"
    if found.keypoints is not None and int((found.keypoints[:, 2] > 0).sum()) < c.min_keypoints:
        return f"pose: {int((found.keypoints[:, 2] > 0).sum())} visible keypoints (< {c.min_keypoints})"
    return None


def check_face(found: Detection, image_height: int, c: PhotoChecks) -> str | None:
    if found.face_box is None:
        return "face: no face found"
    height = found.face_box[3] - found.face_box[1]
    if height / image_height < c.min_face_fraction:
        return f"face: too small ({height / image_height:.1%} of the height < {c.min_face_fraction:.0%})"
    return None


# --- measurements --------------------------------------------------------------------------------

def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian; measured at the fixed working size, so comparable across sizes."""
    import cv2
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def exposure(grey: np.ndarray) -> tuple[float, float]:
    """(mean luma 0..1, fraction of pixels at the ends of the range)."""
    return float(grey.mean() / 255.0), float(((grey <= 4) | (grey >= 251)).mean())


def perceptual_hash(rgb: np.ndarray) -> int:
    import imagehash
    return hash_to_int(imagehash.phash(Image.fromarray(rgb)).hash)


def _to_rgb(img: Image.Image, conversions: list[str]) -> Image.Image:
    """Any mode -> 8-bit RGB: CMYK, 16-bit, palette, grey and alpha (composited on white)."""
    if img.mode == "RGB":
        return img
    conversions.append(img.mode)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def open_photo(data: bytes, c: PhotoChecks) -> Image.Image:
    """The bytes as an unloaded image, its size checked against the pixel limit."""
    if not data:
        raise PhotoRejected("decode: empty file")
    try:
        with warnings.catch_warnings():  # our own limit (checks.max_pixels) decides, below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise PhotoRejected(f"decode: decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        detail = str(error).split(" <")[0]  # PIL names the stream object: no addresses in reasons
        raise PhotoRejected(f"decode: not an image ({type(error).__name__}: {detail})") from None
    reason = check_pixels(*img.size, c)
    if reason:
        raise PhotoRejected(reason)
    return img


def decode(data: bytes, c: PhotoChecks, full: bool = False) -> Decoded:
    """Decode once, upright and RGB, at the working size (JPEGs decode scaled down in the DCT);
    ``full`` keeps the full size (for re-encoding a converted photo)."""
    img = open_photo(data, c)
    conversions: list[str] = []
    source_format = img.format or ""
    try:
        orientation = img.getexif().get(ORIENTATION_TAG, 1)
        if not full and img.format == "JPEG":
            img.draft(img.mode, (c.work_side, c.work_side))
        img = ImageOps.exif_transpose(img) if orientation != 1 else img
        if orientation not in (1, None):
            conversions.append(f"orientation {orientation}")
        rgb = _to_rgb(img, conversions)
        rgb.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise PhotoRejected(f"decode: {type(error).__name__}: {error}") from None
    scale = 1.0 if full else c.work_side / max(rgb.size)
    if scale < 1.0:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
    return Decoded(np.asarray(rgb), _upright_size(data, orientation), conversions, source_format)


def _upright_size(data: bytes, orientation: int | None) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


@dataclass
class Curated:
    """A kept photo's members before encoding."""
    image_bytes: bytes
    mask: np.ndarray
    meta: dict


def measure(decoded: Decoded, c: PhotoChecks) -> tuple[dict, str | None]:
    """The image checks (no models) on one decode: (scores, first failing reason or None)."""
    import cv2
    width, height = decoded.size
    scores: dict = {"width": width, "height": height}
    reason = check_size(width, height, c)
    grey = cv2.cvtColor(decoded.work, cv2.COLOR_RGB2GRAY)
    scores["sharpness"] = round(sharpness(grey), 2)
    scores["brightness"], scores["clipped"] = (round(v, 4) for v in exposure(grey))
    reason = reason or check_exposure(scores["brightness"], scores["clipped"], c) \
        or check_sharpness(scores["sharpness"], c)
    return scores, reason


def curate_photo(data: bytes, source: str, c: PhotoChecks, detector) -> Curated:
    """All checks on one photo's bytes; PhotoRejected (with the reason and the scores so far)
    at the first that fails."""
    decoded = decode(data, c)
    scores, reason = measure(decoded, c)
    if reason:
        raise PhotoRejected(reason, scores)
    found = detector.detect(decoded.work)
    work_h, work_w = decoded.work.shape[:2]
    scores.update(people=found.people, person_fraction=round(found.person_area / (work_w * work_h), 4),
                  face_confidence=round(found.face_score, 3))
    reason = check_person(found, work_w * work_h, c) or check_face(found, work_h, c)
    if reason:
        raise PhotoRejected(reason, scores)
    scores["phash"] = f"{perceptual_hash(decoded.work):016x}"
    width, height = decoded.size
    sx, sy = width / work_w, height / work_h
    if decoded.conversions or decoded.source_format != "JPEG":
        image_bytes = encode_jpeg(decode(data, c, full=True).work, c.jpeg_quality)
    else:
        image_bytes = data
    mask = np.asarray(Image.fromarray(found.mask).resize((width, height), Image.BILINEAR))
    keypoints = [[0.0, 0.0, 0.0]] * 18 if found.keypoints is None else \
        [[round(float(x * sx), 1), round(float(y * sy), 1), float(v)] for x, y, v in found.keypoints]
    x0, y0, x1, y1 = found.face_box
    meta = {"schema": PHOTO.tag, "source": source, "sha256": hashlib.sha256(data).hexdigest(),
            "converted": decoded.conversions, "detector": c.detector, "keypoints": keypoints,
            "face_box": [round(x0 * sx, 1), round(y0 * sy, 1), round(x1 * sx, 1), round(y1 * sy, 1)],
            "scores": scores, "checks": asdict(c)}
    return Curated(image_bytes, mask, meta)


def curate_naively(data_of, source: str, c: PhotoChecks, detector) -> str | None:
    """The same checks done the obvious way, for the benchmark's baseline: every check decodes
    the file again at full size (``data_of()`` reads it again too); returns the reason or None."""
    import cv2

    def full() -> np.ndarray:
        return decode(data_of(), c, full=True).work

    height, width = full().shape[:2]
    reason = check_size(width, height, c)
    grey = cv2.cvtColor(full(), cv2.COLOR_RGB2GRAY)
    reason = reason or check_sharpness(sharpness(cv2.resize(grey, (c.work_side, c.work_side * height // width))), c)
    grey = cv2.cvtColor(full(), cv2.COLOR_RGB2GRAY)
    reason = reason or check_exposure(*exposure(grey), c)
    found = detector.detect(full())
    reason = reason or check_person(found, width * height, c) or check_face(found, height, c)
    perceptual_hash(full())
    return reason
