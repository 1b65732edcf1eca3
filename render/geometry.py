"""Small rigid-transform and camera helpers shared by the generator, poses and backends
(y up, characters face +z, a character's left is +x; angles in degrees at the edges)."""
from __future__ import annotations

import numpy as np


def rotation_xyz(degrees) -> np.ndarray:
    """3x3 rotation for Euler angles (rx, ry, rz): rotate about x, then y, then z (fixed axes)."""
    rx, ry, rz = np.radians(np.asarray(degrees, dtype=float))
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def euler_xyz(m: np.ndarray) -> np.ndarray:
    """3x3 rotation -> the (rx, ry, rz) degrees that rotation_xyz turns back into it."""
    m = np.asarray(m, float)
    ry = np.arcsin(np.clip(-m[2, 0], -1.0, 1.0))
    if abs(m[2, 0]) < 1 - 1e-9:
        rx, rz = np.arctan2(m[2, 1], m[2, 2]), np.arctan2(m[1, 0], m[0, 0])
    else:  # gimbal lock: put everything in rz
        rx, rz = 0.0, np.arctan2(-m[0, 1], m[1, 1])
    return np.degrees([rx, ry, rz])


def transform(rotation: np.ndarray | None = None, translation=None) -> np.ndarray:
    m = np.eye(4)
    if rotation is not None:
        m[:3, :3] = rotation
    if translation is not None:
        m[:3, 3] = translation
    return m


def quaternion_to_matrix(q) -> np.ndarray:
    """glTF quaternion (x, y, z, w) -> 3x3 rotation."""
    x, y, z, w = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
    """3x3 rotation -> glTF quaternion (x, y, z, w), unit length, w >= 0."""
    m = np.asarray(m, float)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i], q[j], q[k] = 0.25 * s, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
    q = np.asarray(q) / np.linalg.norm(q)
    return -q if q[3] < 0 else q


def rotation_between(a, b) -> np.ndarray:
    """The shortest-arc 3x3 rotation taking direction ``a`` to direction ``b``."""
    a, b = np.asarray(a, float) / np.linalg.norm(a), np.asarray(b, float) / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:  # opposite: turn half way round any perpendicular axis
        axis = np.cross(a, (1.0, 0.0, 0.0) if abs(a[0]) < 0.9 else (0.0, 1.0, 0.0))
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def rotation_about(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    x = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(x) * k + (1 - np.cos(x)) * k @ k


def _cross3(a, b) -> np.ndarray:
    """The cross product of two 3-vectors; np.cross spends ~20 us on axis handling, and the camera
    solve calls look_at several times per render."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def look_at(eye, target, up=(0.0, 1.0, 0.0), roll_deg: float = 0.0) -> np.ndarray:
    """Camera-to-world pose (OpenGL convention: the camera looks down its -z axis)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = _cross3(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking straight up or down
        right = _cross3(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    true_up = _cross3(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, -forward, eye
    if roll_deg:
        pose[:3, :3] = pose[:3, :3] @ rotation_xyz((0.0, 0.0, roll_deg))
    return pose


def focal_px(focal_mm: float, height_px: int, sensor_mm: float = 24.0) -> float:
    """Focal length in pixels, with the sensor height spanning the image height."""
    return focal_mm / sensor_mm * height_px


def project(points, camera_pose: np.ndarray, fpx: float, width: int, height: int,
            center_px=None) -> tuple[np.ndarray, np.ndarray]:
    """World points -> (pixel xy (N,2), depth along the view axis (N,)) for a pinhole camera whose
    principal point is ``center_px`` (the image centre by default)."""
    cx, cy = center_px if center_px is not None else (width / 2.0, height / 2.0)
    pts = np.asarray(points, float).reshape(-1, 3)
    world_to_cam = np.linalg.inv(camera_pose)
    cam = pts @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    depth = -cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = np.stack([cx + fpx * cam[:, 0] / depth, cy - fpx * cam[:, 1] / depth], axis=1)
    return xy, depth
