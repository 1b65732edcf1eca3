"""Finding the person in a photo: how many people, the main person's mask and OpenPose-18
keypoints, and the largest face. Two detectors, both offline with the models their wheels ship:

- ``mediapipe`` (0.10.21, the ``curate`` extra): Pose with segmentation (33 landmarks -> OpenPose-18,
  a soft person mask) and the full-range FaceDetection, which also counts the people;
- ``opencv``: the HOG people detector and the frontal-face Haar cascade; its mask is the person's
  box and it gives no keypoints (a fallback where mediapipe cannot be installed)."""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import numpy as np

DETECTORS = ("mediapipe", "opencv")

# OpenPose-18 joint -> MediaPipe Pose landmark(s) (two: their midpoint).
MEDIAPIPE_TO_OPENPOSE = (
    (0,), (11, 12), (12,), (14,), (16,), (11,), (13,), (15,), (24,), (26,), (28,), (23,), (25,), (27,),
    (5,), (2,), (8,), (7,),
)
VISIBLE = 0.5  # MediaPipe landmark visibility above which a keypoint counts as visible


@dataclass
class Detection:
    people: int
    mask: np.ndarray                 # uint8 HxW, 255 = the main person
    keypoints: np.ndarray | None     # (18, 3) x, y, visible (OpenPose-18), None when the detector has none
    face_box: list[float] | None     # [x0, y0, x1, y1] of the largest face
    face_score: float = 0.0

    @property
    def person_area(self) -> int:
        return int((self.mask > 127).sum())


@contextlib.contextmanager
def native_stderr_silenced():
    """Send what native code writes to file descriptor 2 to /dev/null meanwhile: MediaPipe's C++
    (absl, TF Lite) logs start-up notices there that neither GLOG_minloglevel nor absl's Python
    logging reaches. Python's own errors are raised after the descriptor is restored."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class MediapipeDetector:
    """MediaPipe's bundled Pose (with segmentation) and FaceDetection, created once per worker."""

    def __init__(self, face_confidence: float = 0.5):
        try:
            import mediapipe as mp
        except ImportError as error:
            raise RuntimeError("the mediapipe person detector needs pip install 'pairforge[curate]' "
                               f"({error}); or set checks.detector=opencv") from None
        self._posed = True
        with native_stderr_silenced():  # the graphs' threads log while they start: run them once meanwhile
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True)
            self._faces = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                                    min_detection_confidence=face_confidence)
            self.detect(np.full((64, 64, 3), 255, np.uint8))
        self._posed = False  # the first pose found logs a notice as well

    def detect(self, rgb: np.ndarray) -> Detection:
        height, width = rgb.shape[:2]
        rgb = np.ascontiguousarray(rgb)
        faces = self._faces.process(rgb).detections or []
        boxes = []
        for face in faces:
            box = face.location_data.relative_bounding_box
            boxes.append(([max(0.0, box.xmin * width), max(0.0, box.ymin * height),
                           min(width, (box.xmin + box.width) * width), min(height, (box.ymin + box.height) * height)],
                          float(face.score[0])))
        with contextlib.nullcontext() if self._posed else native_stderr_silenced():
            pose = self._pose.process(rgb)
        if pose.pose_landmarks is None:
            return Detection(len(boxes), np.zeros((height, width), np.uint8), None, _largest(boxes)[0],
                             _largest(boxes)[1])
        self._posed = True
        marks = np.array([[p.x * width, p.y * height, p.visibility] for p in pose.pose_landmarks.landmark])
        keypoints = np.zeros((18, 3))
        for k, sources in enumerate(MEDIAPIPE_TO_OPENPOSE):
            x, y, visibility = marks[list(sources)].mean(0) if len(sources) > 1 else marks[sources[0]]
            if len(sources) > 1:
                visibility = marks[list(sources), 2].min()
            inside = 0 <= x < width and 0 <= y < height
            keypoints[k] = (x, y, 1.0 if visibility > VISIBLE and inside else 0.0)
        mask = np.clip(pose.segmentation_mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
        box, score = _largest(boxes)
        return Detection(max(1, len(boxes)), mask, keypoints, box, score)

    def close(self) -> None:
        self._pose.close()
        self._faces.close()


class OpencvDetector:
    """OpenCV's HOG people detector and frontal-face Haar cascade (both in the opencv wheel)."""

    def __init__(self, face_confidence: float = 0.5):
        import cv2
        self._cv2 = cv2
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._faces = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if self._faces.empty():
            raise RuntimeError(f"no Haar cascades in {cv2.data.haarcascades}: OpenCV 4.11 ships them, 5.x does not")

    def detect(self, rgb: np.ndarray) -> Detection:
        cv2 = self._cv2
        height, width = rgb.shape[:2]
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        faces = self._faces.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=6, minSize=(24, 24))
        boxes = [([float(x), float(y), float(x + w), float(y + h)], 1.0) for x, y, w, h in faces]
        window_w, window_h = self._hog.winSize
        people = [] if width < window_w or height < window_h else \
            self._hog.detectMultiScale(rgb, winStride=(8, 8), padding=(8, 8), scale=1.05)[0]  # smaller: it crashes
        mask = np.zeros((height, width), np.uint8)
        regions = [(x, y, x + w, y + h) for x, y, w, h in people]
        for (x0, y0, x1, y1), _ in boxes:  # a face implies a person below it: a head-and-shoulders box
            w = x1 - x0
            regions.append((int(x0 - w), int(y0 - 0.3 * w), int(x1 + w), height))
        if regions:
            x0, y0, x1, y1 = max(regions, key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
            mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 255
        box, score = _largest(boxes)
        return Detection(max(len(people), len(boxes)), mask, None, box, score)

    def close(self) -> None:
        pass


def _largest(boxes: list[tuple[list[float], float]]) -> tuple[list[float] | None, float]:
    if not boxes:
        return None, 0.0
    return max(boxes, key=lambda b: (b[0][2] - b[0][0]) * (b[0][3] - b[0][1]))


def make_detector(name: str):
    return {"mediapipe": MediapipeDetector, "opencv": OpencvDetector}[name]()
