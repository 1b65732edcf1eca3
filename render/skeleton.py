"""The canonical humanoid skeleton: 21 joints, their parents, rest positions from body
proportions (T-pose, feet on the ground at y = 0), face landmarks, and the OpenPose-18 keypoints
derived from them. Poses, keypoints and bone maps are all defined on this skeleton."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shards.schema import OPENPOSE18

SIDES = ("left", "right")
LIMB_JOINTS = ("shoulder", "upper_arm", "lower_arm", "hand", "upper_leg", "lower_leg", "foot", "toes")

JOINT_PARENTS: dict[str, str | None] = {
    "hips": None, "spine": "hips", "chest": "spine", "neck": "chest", "head": "neck",
    **{f"{s}_shoulder": "chest" for s in SIDES},
    **{f"{s}_upper_arm": f"{s}_shoulder" for s in SIDES},
    **{f"{s}_lower_arm": f"{s}_upper_arm" for s in SIDES},
    **{f"{s}_hand": f"{s}_lower_arm" for s in SIDES},
    **{f"{s}_upper_leg": "hips" for s in SIDES},
    **{f"{s}_lower_leg": f"{s}_upper_leg" for s in SIDES},
    **{f"{s}_foot": f"{s}_lower_leg" for s in SIDES},
    **{f"{s}_toes": f"{s}_foot" for s in SIDES},
}
JOINTS: tuple[str, ...] = tuple(JOINT_PARENTS)  # parents always come before children
JOINT_INDEX = {name: i for i, name in enumerate(JOINTS)}
REQUIRED_JOINTS = tuple(j for j in JOINTS if not j.endswith(("_shoulder", "_toes")))

# The child whose direction is a joint's bone direction (the axis of its bone roll).
PRIMARY_CHILD = {
    "hips": "spine", "spine": "chest", "chest": "neck", "neck": "head",
    **{f"{s}_{a}": f"{s}_{b}" for s in SIDES for a, b in (("shoulder", "upper_arm"), ("upper_arm", "lower_arm"),
                                                          ("lower_arm", "hand"), ("upper_leg", "lower_leg"),
                                                          ("lower_leg", "foot"), ("foot", "toes"))},
}

# Bones whose rest direction differs by rig convention (T- vs A-pose arms, bent rest legs), not by
# anatomy: retargeting aligns these to the canonical T-pose. A hand follows its forearm.
ALIGNED_BONES = {f"{s}_{a}": f"{s}_{b}" for s in SIDES for a, b in (
    ("upper_arm", "lower_arm"), ("lower_arm", "hand"), ("upper_leg", "lower_leg"), ("lower_leg", "foot"))}
FOLLOWS = {f"{s}_hand": f"{s}_lower_arm" for s in SIDES}

# Face landmarks ride on the head joint; they give the keypoints a skeleton has no bones for.
LANDMARKS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "head_top", "chin")

# OpenPose-18 keypoint -> (kind, name): a joint or a head landmark.
_SOURCES = {
    "nose": ("landmark", "nose"), "neck": ("joint", "neck"),
    **{f"{s}_shoulder": ("joint", f"{s}_upper_arm") for s in SIDES},
    **{f"{s}_elbow": ("joint", f"{s}_lower_arm") for s in SIDES},
    **{f"{s}_wrist": ("joint", f"{s}_hand") for s in SIDES},
    **{f"{s}_hip": ("joint", f"{s}_upper_leg") for s in SIDES},
    **{f"{s}_knee": ("joint", f"{s}_lower_leg") for s in SIDES},
    **{f"{s}_ankle": ("joint", f"{s}_foot") for s in SIDES},
    **{f"{s}_eye": ("landmark", f"{s}_eye") for s in SIDES},
    **{f"{s}_ear": ("landmark", f"{s}_ear") for s in SIDES},
}
OPENPOSE_SOURCES = {name: _SOURCES[name] for name in OPENPOSE18}

# Limb pairs of the OpenPose skeleton image (for overlays and pose images).
OPENPOSE_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)


@dataclass(frozen=True)
class Proportions:
    """Body proportions in metres; the procedural generator samples these per character."""
    height: float = 1.7
    heads_tall: float = 7.0
    leg_fraction: float = 0.47   # hip height / height
    shoulder_width: float = 0.23  # of height
    hip_width: float = 0.17       # of height
    arm_factor: float = 1.0       # scales arm segment lengths
    foot_length: float = 0.15     # of height

    @property
    def head_height(self) -> float:
        return self.height / self.heads_tall


def rest_positions(p: Proportions = Proportions()) -> dict[str, np.ndarray]:
    """World positions of every joint and landmark in the T-pose rest."""
    h, hh = p.height, p.head_height
    neck_len = 0.3 * hh
    head_y = h - 0.9 * hh            # the head joint sits at the skull base
    neck_y = head_y - neck_len
    hip_y = p.leg_fraction * h
    torso = neck_y - hip_y
    ankle_y = 0.045 * h
    knee_y = ankle_y + 0.5 * (hip_y - 0.04 * h - ankle_y)
    arm_y = neck_y - 0.35 * neck_len - 0.01 * h
    upper_arm, forearm = 0.165 * h * p.arm_factor, 0.145 * h * p.arm_factor
    pos = {
        "hips": (0, hip_y, 0), "spine": (0, hip_y + 0.3 * torso, 0), "chest": (0, hip_y + 0.62 * torso, 0),
        "neck": (0, neck_y, 0), "head": (0, head_y, 0),
    }
    for s, sign in (("left", 1.0), ("right", -1.0)):
        shoulder_x = sign * p.shoulder_width * h / 2
        hip_x = sign * p.hip_width * h / 2 * 0.6
        pos.update({
            f"{s}_shoulder": (sign * 0.02 * h, arm_y, 0),
            f"{s}_upper_arm": (shoulder_x, arm_y, 0),
            f"{s}_lower_arm": (shoulder_x + sign * upper_arm, arm_y, 0),
            f"{s}_hand": (shoulder_x + sign * (upper_arm + forearm), arm_y, 0),
            f"{s}_upper_leg": (hip_x, hip_y - 0.04 * h, 0),
            f"{s}_lower_leg": (hip_x, knee_y, 0),
            f"{s}_foot": (hip_x, ankle_y, 0),
            f"{s}_toes": (hip_x, 0.012 * h, 0.6 * p.foot_length * h),
        })
    head_centre = np.array([0, head_y + 0.4 * hh, 0.02 * hh])
    for name, offset in face_landmark_offsets(hh).items():
        pos[name] = head_centre + offset
    return {name: np.asarray(xyz, dtype=float) for name, xyz in pos.items()}


def head_radii(head_height: float, width: float = 1.0, depth: float = 1.0) -> np.ndarray:
    """Ellipsoid radii (x, y, z) of a head of the given height."""
    return np.array([0.4 * width, 0.5, 0.45 * depth]) * head_height


def face_landmark_offsets(head_height: float, width: float = 1.0, depth: float = 1.0) -> dict[str, np.ndarray]:
    """Landmark offsets from the head centre, on the surface of the head ellipsoid."""
    rx, ry, rz = head_radii(head_height, width, depth)

    def on_surface(x: float, y: float) -> float:
        return rz * np.sqrt(max(0.0, 1 - (x / rx) ** 2 - (y / ry) ** 2))

    eye_x, eye_y = 0.36 * rx, 0.05 * ry
    return {
        "nose": np.array([0, -0.2 * ry, on_surface(0, -0.2 * ry) + 0.12 * rz]),
        "left_eye": np.array([eye_x, eye_y, on_surface(eye_x, eye_y)]),
        "right_eye": np.array([-eye_x, eye_y, on_surface(eye_x, eye_y)]),
        "left_ear": np.array([rx, -0.05 * ry, 0.0]),
        "right_ear": np.array([-rx, -0.05 * ry, 0.0]),
        "head_top": np.array([0, ry, 0.0]),
        "chin": np.array([0, -ry, 0.0]),
    }


# Body parts: each skinned vertex belongs to the part of the canonical joint that moves it most
# (render.characters), and the posed triangles, rasterized with their part ids, say which part the
# camera sees at a keypoint (render.backends.common). Clavicles belong to the torso, toes to the foot.
BODY_PARTS = ("head", "neck", "torso", *(f"{s}_{p}" for s in SIDES for p in (
    "upper_arm", "lower_arm", "hand", "upper_leg", "lower_leg", "foot")))
PART_INDEX = {name: i for i, name in enumerate(BODY_PARTS)}
PART_OF_JOINT = {
    "head": "head", "neck": "neck", "hips": "torso", "spine": "torso", "chest": "torso",
    **{f"{s}_shoulder": "torso" for s in SIDES},
    **{f"{s}_{j}": f"{s}_{j}" for s in SIDES for j in ("upper_arm", "lower_arm", "hand", "upper_leg", "lower_leg")},
    **{f"{s}_{j}": f"{s}_foot" for s in SIDES for j in ("foot", "toes")},
}
# Per OpenPose-18 keypoint, the parts that may cover it while a pose estimator still sees it: its
# own limb segments (a joint sits where two meet). Any other part in front of it hides it.
_OWN_PARTS = {
    "nose": ("head",), "neck": ("neck", "torso", "head"),
    **{f"{s}_eye": ("head",) for s in SIDES}, **{f"{s}_ear": ("head",) for s in SIDES},
    **{f"{s}_shoulder": ("torso", "neck", f"{s}_upper_arm") for s in SIDES},
    **{f"{s}_elbow": (f"{s}_upper_arm", f"{s}_lower_arm") for s in SIDES},
    **{f"{s}_wrist": (f"{s}_lower_arm", f"{s}_hand") for s in SIDES},
    **{f"{s}_hip": ("torso", f"{s}_upper_leg") for s in SIDES},
    **{f"{s}_knee": (f"{s}_upper_leg", f"{s}_lower_leg") for s in SIDES},
    **{f"{s}_ankle": (f"{s}_lower_leg", f"{s}_foot") for s in SIDES},
}
KEYPOINT_PARTS = tuple(frozenset(PART_INDEX[p] for p in _OWN_PARTS[name]) for name in OPENPOSE18)
# The body joints (not the face) of OpenPose-18: the standardized render shows every one of them.
BODY_KEYPOINTS = tuple(i for i, name in enumerate(OPENPOSE18) if OPENPOSE_SOURCES[name][0] == "joint")
# Limb capsules for the interpenetration check: (name, joint at one end, joint at the other).
LIMB_CAPSULES = tuple((f"{s}_{part}", f"{s}_{a}", f"{s}_{b}") for s in SIDES for part, a, b in (
    ("upper_arm", "upper_arm", "lower_arm"), ("lower_arm", "lower_arm", "hand"),
    ("upper_leg", "upper_leg", "lower_leg"), ("lower_leg", "lower_leg", "foot")))
