"""What every backend computes the same way: the character posed and framed by a spec, and from
the posed character its keypoints with depth-tested visibility, the face box, the camera and the
white-background composite."""
from __future__ import annotations

import numpy as np

from render.characters import Character, PosedCharacter, pose_character
from render.geometry import project, rotation_xyz
from render.skeleton import OPENPOSE_SOURCES
from render.spec import SceneSpec, resolve_camera

# Keypoints are hidden when a surface lies this far (x character height) in front of them:
# joints sit inside limbs, face landmarks on the surface.
JOINT_DEPTH_MARGIN, FACE_DEPTH_MARGIN = 0.06, 0.015


def pose_and_frame(character: Character, spec: SceneSpec) -> tuple[PosedCharacter, np.ndarray, np.ndarray, float]:
    """``character`` posed as ``spec`` says (shape keys, then numpy linear-blend skinning) and the
    camera that frames it: (posed character, all its vertices stacked (N, 3) float32,
    camera-to-world pose (4, 4), focal length in pixels)."""
    width, height = spec.resolution
    posed = pose_character(character, spec.pose, spec.expression)
    vertices = np.vstack(posed.positions)
    camera_pose, fpx = resolve_camera(spec.camera, vertices[::4], posed.head_outline(), width, height)
    return posed, vertices, camera_pose, fpx


def keypoints_with_visibility(points_3d: np.ndarray, camera_pose: np.ndarray, fpx: float, depth: np.ndarray,
                              character_height: float) -> np.ndarray:
    """(18, 3) [x, y, visible]: visible when inside the frame and not occluded by nearer surface
    (the nearest surface in a 3x3 window around the point, from the rendered depth buffer)."""
    height, width = depth.shape
    xy, z = project(points_3d, camera_pose, fpx, width, height)
    out = np.zeros((len(points_3d), 3))
    out[:, :2] = xy
    for i, (kind, _) in enumerate(OPENPOSE_SOURCES.values()):
        x, y = xy[i]
        if not (np.isfinite(x) and 0 <= x < width and 0 <= y < height and z[i] > 0):
            continue
        px, py = int(x), int(y)
        window = depth[max(py - 1, 0):py + 2, max(px - 1, 0):px + 2]
        surface = window[window > 0]
        margin = (JOINT_DEPTH_MARGIN if kind == "joint" else FACE_DEPTH_MARGIN) * character_height
        out[i, 2] = 1.0 if surface.size == 0 or surface.min() >= z[i] - margin else 0.0
    return out


def face_box(head_outline: np.ndarray, camera_pose: np.ndarray, fpx: float, width: int, height: int) -> list[float]:
    """[x0, y0, x1, y1] of the projected crown, chin and ears."""
    xy, _ = project(head_outline, camera_pose, fpx, width, height)
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    return [round(float(v), 2) for v in (x0, y0, x1, y1)]


def on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA -> RGB over a white background."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def light_pose(camera_pose: np.ndarray, light) -> np.ndarray:
    """World pose of a directional light given relative to the camera (it shines along its -z)."""
    pose = np.eye(4)
    pose[:3, :3] = camera_pose[:3, :3] @ rotation_xyz((-light.elevation_deg, light.azimuth_deg, 0.0))
    return pose


def character_result(rgba: np.ndarray, depth: np.ndarray, posed, camera_pose: np.ndarray, fpx: float, spec,
                     character_height: float) -> dict:
    """The backend-independent result dict (see render.backends) of one character render."""
    height, width = depth.shape
    return {
        "rgba": rgba, "mask": rgba[..., 3] > 0, "depth": depth,
        "rgb_on_white": on_white(rgba) if spec.background == "white" else None,
        "keypoints": keypoints_with_visibility(posed.keypoints_3d(), camera_pose, fpx, depth, character_height),
        "face_box": face_box(posed.head_outline(), camera_pose, fpx, width, height),
        "camera": camera_json(camera_pose, fpx, width, height),
    }


def camera_json(camera_pose: np.ndarray, fpx: float, width: int, height: int) -> dict:
    return {"pose": camera_pose.round(6).tolist(), "focal_px": round(float(fpx), 4),
            "principal_point": [width / 2, height / 2]}
