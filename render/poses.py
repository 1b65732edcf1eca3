"""Poses on the canonical skeleton: per-joint Euler rotations (degrees, x then y then z, in the
joint's world-aligned rest frame) as plain JSON-able dicts. The A-pose, joint limits, forward
kinematics and a seeded sampler that rejects poses with limbs through the body."""
from __future__ import annotations

import numpy as np

from render.geometry import rotation_xyz
from render.skeleton import (
    JOINT_PARENTS,
    JOINTS,
    LANDMARKS,
    Proportions,
    rest_positions,
)

Pose = dict[str, list[float]]

# Limits for the left side and the spine, (lo, hi) degrees per axis; the right side mirrors them.
# Signs: a left arm lies along +x in the rest T-pose, so -z lowers it and -y swings it forward;
# +x on a knee bends it backwards, -x on a hip lifts the leg forwards.
_LEFT_LIMITS = {
    "hips": ((-15, 15), (-30, 30), (-10, 10)),
    "spine": ((-20, 35), (-30, 30), (-20, 20)),
    "chest": ((-15, 25), (-25, 25), (-15, 15)),
    "neck": ((-25, 35), (-40, 40), (-20, 20)),
    "head": ((-25, 30), (-45, 45), (-20, 20)),
    "left_shoulder": ((0, 0), (-15, 10), (-10, 25)),
    "left_upper_arm": ((-60, 60), (-95, 40), (-85, 70)),
    "left_lower_arm": ((-70, 70), (-145, 0), (-5, 5)),
    "left_hand": ((-60, 60), (-30, 30), (-70, 70)),
    "left_upper_leg": ((-100, 35), (-35, 35), (-15, 50)),
    "left_lower_leg": ((0, 145), (-5, 5), (-3, 3)),
    "left_foot": ((-25, 45), (-20, 20), (-15, 15)),
    "left_toes": ((-35, 15), (0, 0), (0, 0)),
}
# The relaxed stance poses are sampled around: arms down, elbows and knees a little bent.
_LEFT_RELAXED = {"left_upper_arm": (0, 0, -65), "left_lower_arm": (0, -15, 0), "left_lower_leg": (5, 0, 0)}


def _mirror(angles) -> tuple:
    """Left -> right: reflecting across the x = 0 plane keeps x angles and negates y and z."""
    x, y, z = angles
    return (x, -y, -z)


def _mirror_limits(limits) -> tuple:
    (xl, xh), (yl, yh), (zl, zh) = limits
    return ((xl, xh), (-yh, -yl), (-zh, -zl))


JOINT_LIMITS: dict[str, tuple] = {}
RELAXED: dict[str, tuple] = {}
for _joint, _limits in _LEFT_LIMITS.items():
    JOINT_LIMITS[_joint] = _limits
    if _joint.startswith("left_"):
        JOINT_LIMITS["right_" + _joint[5:]] = _mirror_limits(_limits)
for _joint, _angles in _LEFT_RELAXED.items():
    RELAXED[_joint] = _angles
    RELAXED["right_" + _joint[5:]] = _mirror(_angles)
assert set(JOINT_LIMITS) == set(JOINTS)

A_POSE: Pose = {"left_upper_arm": [0.0, 0.0, -45.0], "right_upper_arm": [0.0, 0.0, 45.0]}


def joint_rotations(pose: Pose) -> dict[str, np.ndarray]:
    """World rotations of every joint after applying ``pose`` down the hierarchy."""
    world: dict[str, np.ndarray] = {}
    for joint in JOINTS:
        parent = JOINT_PARENTS[joint]
        local = rotation_xyz(pose[joint]) if joint in pose else np.eye(3)
        world[joint] = local if parent is None else world[parent] @ local
    return world


def posed_positions(pose: Pose, rest: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Forward kinematics of the canonical skeleton: joint and landmark positions under ``pose``."""
    rotations = joint_rotations(pose)
    out = {"hips": rest["hips"]}
    for joint in JOINTS[1:]:
        parent = JOINT_PARENTS[joint]
        out[joint] = out[parent] + rotations[parent] @ (rest[joint] - rest[parent])
    for name in LANDMARKS:
        out[name] = out["head"] + rotations["head"] @ (rest[name] - rest["head"])
    return out


def _points_on(a: np.ndarray, b: np.ndarray, n: int = 6) -> np.ndarray:
    return a + np.linspace(0, 1, n)[:, None] * (b - a)


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip((points - a) @ ab / max(ab @ ab, 1e-12), 0, 1)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def pose_collisions(pose: Pose, proportions: Proportions = Proportions()) -> list[str]:
    """Body parts that pass through each other under ``pose`` on a canonical body (empty = fine)."""
    h = proportions.height
    p = posed_positions(pose, rest_positions(proportions))
    chest_rot = joint_rotations(pose)["chest"]
    torso_bottom, torso_top = p["hips"] - np.array([0, 0.05 * h, 0]), p["neck"]
    head_centre = (p["head_top"] + p["chin"]) / 2
    found = []
    for side, other in (("left", "right"), ("right", "left")):
        arm = np.vstack([_points_on(p[f"{side}_lower_arm"], p[f"{side}_hand"]),
                         p[f"{side}_hand"] + (p[f"{side}_hand"] - p[f"{side}_lower_arm"]) * 0.5])
        local = (arm - (torso_bottom + torso_top) / 2) @ chest_rot  # into the torso's frame
        half_len = np.linalg.norm(torso_top - torso_bottom) / 2
        inside_torso = ((local[:, 0] / (0.1 * h + 0.025 * h)) ** 2 + (local[:, 2] / (0.065 * h + 0.025 * h)) ** 2 < 1) \
            & (np.abs(local[:, 1]) < half_len)
        if inside_torso.any():
            found.append(f"{side} arm through the torso")
        for leg in ("left", "right"):
            if (_segment_distance(arm, p[f"{leg}_upper_leg"], p[f"{leg}_lower_leg"]) < 0.075 * h).any():
                found.append(f"{side} arm through the {leg} thigh")
        if (np.linalg.norm(arm - head_centre, axis=1) < 0.6 * proportions.head_height).any():
            found.append(f"{side} arm through the head")
        shin = np.vstack([_points_on(p[f"{side}_lower_leg"], p[f"{side}_foot"]), p[f"{side}_toes"]])
        if side == "left" and (_segment_distance(shin, p[f"{other}_lower_leg"], p[f"{other}_foot"]) < 0.06 * h).any():
            found.append("legs through each other")
        if (_segment_distance(shin, torso_bottom, torso_top) < 0.08 * h).any():
            found.append(f"{side} leg through the torso")
    return found


def sample_pose(rng: np.random.Generator, activity: tuple[float, float] = (0.25, 1.0),
                max_tries: int = 200) -> Pose:
    """A random pose within joint limits and free of self-intersection, around a relaxed stance.

    ``activity`` bounds how far from the relaxed stance towards the limits joints may go.
    """
    for _ in range(max_tries):
        strength = rng.uniform(*activity)
        pose: Pose = {}
        for joint in JOINTS:
            centre = RELAXED.get(joint, (0.0, 0.0, 0.0))
            angles = []
            for (lo, hi), c in zip(JOINT_LIMITS[joint], centre):
                u = rng.uniform(-1.0, 1.0) * strength
                angles.append(round(float(c + u * (hi - c) if u > 0 else c + u * (c - lo)), 3))
            if any(angles):
                pose[joint] = angles
        if not pose_collisions(pose):
            return pose
    raise RuntimeError(f"no collision-free pose in {max_tries} tries; widen the joint limits or lower activity")
