"""Scene specs: plain data (JSON round-trip) describing one render, their seeded sampling from
a render config, the standardized spec of a character, and camera resolution against a posed
character (shared by every backend, so the same spec frames the same way everywhere)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from render.geometry import focal_px, look_at, project
from render.poses import A_POSE, Pose, sample_pose


@dataclass(frozen=True)
class CameraSpec:
    """``orbit``: azimuth/elevation around the character, framed to fill ``fill`` of the frame.
    ``standard``: a front camera placed so the head lands on ``face_center`` with ``head_height``
    (fractions of width/height and of height)."""
    mode: str = "orbit"
    azimuth_deg: float = 0.0
    elevation_deg: float = 0.0
    roll_deg: float = 0.0
    focal_mm: float = 50.0
    fill: float = 0.8
    offset: tuple[float, float] = (0.0, 0.0)  # shift within the free margin, -1..1 per axis
    face_center: tuple[float, float] = (0.5, 0.15)
    head_height: float = 0.11


@dataclass(frozen=True)
class LightSpec:
    azimuth_deg: float   # relative to the camera: 0 = from the camera, +90 = from its right
    elevation_deg: float
    intensity: float
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class SceneSpec:
    character_id: str
    character_file: str
    pose_id: int
    pose: Pose
    camera: CameraSpec
    lights: tuple[LightSpec, ...]
    ambient: float = 0.3
    expression: dict[str, float] = field(default_factory=dict)
    resolution: tuple[int, int] = (512, 768)
    background: str = "transparent"  # or "white"
    view_id: int = 0

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict) -> "SceneSpec":
        data = dict(data)
        data["camera"] = CameraSpec(**{**data["camera"], "offset": tuple(data["camera"]["offset"]),
                                       "face_center": tuple(data["camera"]["face_center"])})
        data["lights"] = tuple(LightSpec(**{**l, "colour": tuple(l["colour"])}) for l in data["lights"])
        data["resolution"] = tuple(data["resolution"])
        return cls(**data)


@dataclass(frozen=True)
class SamplingRanges:
    """Ranges the source specs are drawn from (the ``scene`` section of a render config)."""
    azimuth_deg: tuple[float, float] = (-75.0, 75.0)
    elevation_deg: tuple[float, float] = (-10.0, 25.0)
    roll_deg: tuple[float, float] = (-8.0, 8.0)
    focal_mm: tuple[float, float] = (35.0, 85.0)
    fill: tuple[float, float] = (0.6, 0.92)
    key_light_intensity: tuple[float, float] = (2.0, 5.0)
    ambient: tuple[float, float] = (0.15, 0.5)
    pose_activity: tuple[float, float] = (0.25, 1.0)
    expression_probability: float = 0.7
    expression_max: float = 1.0


@dataclass(frozen=True)
class StandardView:
    """The fixed standardized view (the ``standard`` section of a render config)."""
    face_center: tuple[float, float] = (0.5, 0.15)
    head_height: float = 0.11
    focal_mm: float = 50.0


def pose_for(job_seed: int, pose_id: int, activity=(0.25, 1.0)) -> Pose:
    """Pose ``pose_id`` of a job: the same id is the same pose on every character."""
    return sample_pose(np.random.default_rng([job_seed, 0x905E, pose_id]), activity)


def _warm_light(rng: np.random.Generator) -> tuple[float, float, float]:
    warmth = rng.uniform(-0.15, 0.15)
    return (round(1.0 + min(warmth, 0), 3), 1.0, round(1.0 - max(warmth, 0), 3))


def sample_source_spec(ranges: SamplingRanges, seed: int, job_seed: int, character_id: str, character_file: str,
                       pose_id: int, view_id: int, expressions: list[str], resolution: tuple[int, int],
                       pose: Pose | None = None) -> SceneSpec:
    """The non-standard spec of one sample: a pure function of its seed and ids (``pose`` given
    by a pose table, or drawn from ``pose_id``)."""
    rng = np.random.default_rng(seed)
    u = lambda lo_hi: round(float(rng.uniform(*lo_hi)), 4)  # noqa: E731
    camera = CameraSpec(mode="orbit", azimuth_deg=u(ranges.azimuth_deg), elevation_deg=u(ranges.elevation_deg),
                        roll_deg=u(ranges.roll_deg), focal_mm=u(ranges.focal_mm), fill=u(ranges.fill),
                        offset=(u((-1, 1)), u((-1, 1))))
    key = LightSpec(u((-70, 70)), u((10, 60)), u(ranges.key_light_intensity), _warm_light(rng))
    fill_light = LightSpec(-key.azimuth_deg + u((-20, 20)), u((0, 30)), round(key.intensity * u((0.2, 0.5)), 4))
    expression = {}
    if expressions and rng.uniform() < ranges.expression_probability:
        expression = {name: u((0.0, ranges.expression_max)) for name in expressions if rng.uniform() < 0.6}
    pose = pose if pose is not None else pose_for(job_seed, pose_id, ranges.pose_activity)
    return SceneSpec(character_id, character_file, pose_id, pose,
                     camera, (key, fill_light), u(ranges.ambient), expression, tuple(resolution), "transparent",
                     view_id)


def standard_spec(view: StandardView, character_id: str, character_file: str,
                  resolution: tuple[int, int]) -> SceneSpec:
    """The standardized spec: A-pose, neutral expression, white background, face at fixed pixels."""
    camera = CameraSpec(mode="standard", focal_mm=view.focal_mm, face_center=tuple(view.face_center),
                        head_height=view.head_height)
    lights = (LightSpec(0.0, 20.0, 3.0), LightSpec(45.0, 10.0, 1.0))
    return SceneSpec(character_id, character_file, -1, dict(A_POSE), camera, lights, 0.45, {}, tuple(resolution),
                     "white", 0)


def resolve_camera(camera: CameraSpec, vertices: np.ndarray, head_outline: np.ndarray,
                   width: int, height: int) -> tuple[np.ndarray, float]:
    """Camera-to-world pose and focal length in pixels for ``camera`` against a posed character."""
    fpx = focal_px(camera.focal_mm, height)
    if camera.mode == "standard":
        return _standard_camera(camera, head_outline, fpx, width, height), fpx
    if camera.mode != "orbit":
        raise ValueError(f"unknown camera mode {camera.mode!r}; use 'orbit' or 'standard'")
    az, el = np.radians(camera.azimuth_deg), np.radians(camera.elevation_deg)
    direction = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    lo, hi = vertices.min(0), vertices.max(0)
    target = (lo + hi) / 2
    distance = 2.0 * np.linalg.norm(hi - lo) * fpx / height + 1e-3
    for _ in range(4):  # fit the projected silhouette box into fill x frame, then centre it
        pose = look_at(target + direction * distance, target, roll_deg=camera.roll_deg)
        xy, depth = project(vertices, pose, fpx, width, height)
        (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
        scale = max((x1 - x0) / (camera.fill * width), (y1 - y0) / (camera.fill * height))
        shift_px = np.array([(x0 + x1) / 2 - width / 2, (y0 + y1) / 2 - height / 2])
        target = target + (pose[:3, 0] * shift_px[0] - pose[:3, 1] * shift_px[1]) * np.median(depth) / fpx
        distance *= scale
    # Move the framed character within the margin the fill leaves, by the spec's offset.
    pose = look_at(target + direction * distance, target, roll_deg=camera.roll_deg)
    xy, depth = project(vertices, pose, fpx, width, height)
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    free = np.array([max(0.0, (width - (x1 - x0)) / 2 - 2), max(0.0, (height - (y1 - y0)) / 2 - 2)])
    shift_px = -np.asarray(camera.offset) * free * 0.9
    delta = (pose[:3, 0] * shift_px[0] - pose[:3, 1] * shift_px[1]) * np.median(depth) / fpx
    return look_at(target + delta + direction * distance, target + delta, roll_deg=camera.roll_deg), fpx


def _standard_camera(camera: CameraSpec, head: np.ndarray, fpx: float, width: int, height: int) -> np.ndarray:
    """Front camera (looking down -z, no roll) whose image puts the head outline's box centre on
    ``face_center`` and its height (crown to chin) at ``head_height``."""
    want_centre = np.array([camera.face_center[0] * width, camera.face_center[1] * height])
    want_height = camera.head_height * height
    lo, hi = head.min(0), head.max(0)
    position = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2] + fpx * (hi[1] - lo[1]) / want_height])
    pose = np.eye(4)
    for _ in range(8):  # converges to well under a pixel in a few steps
        pose[:3, 3] = position
        xy, depth = project(head, pose, fpx, width, height)
        (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
        centre_depth = position[2] - (lo[2] + hi[2]) / 2
        position[2] = position[2] - centre_depth + centre_depth * (y1 - y0) / want_height
        pose[:3, 3] = position
        xy, depth = project(head, pose, fpx, width, height)
        (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
        error = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - want_centre
        position[0] += error[0] * np.median(depth) / fpx
        position[1] -= error[1] * np.median(depth) / fpx
    pose[:3, 3] = position
    return pose
