"""The 18 built-in parametric clips (keyframed canonical poses, eased between), so demos and tests
need no motion download."""
from __future__ import annotations

import numpy as np

from render.motions.base import Motion
from render.poses import Pose

_ARMS_DOWN = {"left_upper_arm": [0, 0, -70], "right_upper_arm": [0, 0, 70], "left_lower_arm": [0, -10, 0],
              "right_lower_arm": [0, 10, 0]}


def _mirror(pose: Pose) -> Pose:
    """Swap sides (and reflect the angles): the second half of a cyclic gait."""
    out = {}
    for joint, (x, y, z) in pose.items():
        other = joint.replace("left_", "@").replace("right_", "left_").replace("@", "right_")
        out[other] = [x, -y, -z] if other != joint else [x, -y, -z]
    return out


def _with(base: Pose, **joints) -> Pose:
    return {**base, **{k: list(v) for k, v in joints.items()}}


_STRIDE = _with(_ARMS_DOWN, left_upper_leg=(-25, 0, 0), right_upper_leg=(20, 0, 0), left_lower_leg=(10, 0, 0),
                right_lower_leg=(40, 0, 0), left_upper_arm=(0, 20, -70), right_upper_arm=(0, 20, 70))
_RUN = _with(_ARMS_DOWN, spine=(12, 0, 0), left_upper_leg=(-60, 0, 0), right_upper_leg=(30, 0, 0),
             left_lower_leg=(40, 0, 0), right_lower_leg=(100, 0, 0), left_upper_arm=(0, 45, -70),
             right_upper_arm=(0, 45, 70), left_lower_arm=(0, -90, 0), right_lower_arm=(0, 90, 0))
_CROUCHED = _with(_ARMS_DOWN, spine=(25, 0, 0), left_upper_leg=(-60, 0, 0), right_upper_leg=(-60, 0, 0),
                  left_lower_leg=(90, 0, 0), right_lower_leg=(90, 0, 0), left_foot=(-20, 0, 0),
                  right_foot=(-20, 0, 0), left_upper_arm=(0, 40, -60), right_upper_arm=(0, 40, 60))
_ARMS_UP = _with(_ARMS_DOWN, left_upper_arm=(0, 0, 75), right_upper_arm=(0, 0, -75), left_lower_arm=(0, -10, 0),
                 right_lower_arm=(0, 10, 0))
# name -> cyclic keyframes (the clip loops from the last back to the first)
CLIPS: dict[str, list[Pose]] = {
    "idle": [_ARMS_DOWN, _with(_ARMS_DOWN, spine=(0, 0, 3), head=(0, 12, 0))],
    "walk": [_STRIDE, _mirror(_STRIDE)],
    "run": [_RUN, _mirror(_RUN)],
    "jump": [_CROUCHED, _with(_ARMS_UP, left_foot=(30, 0, 0), right_foot=(30, 0, 0))],
    "wave": [_with(_ARMS_DOWN, right_upper_arm=(0, 0, -60), right_lower_arm=(0, 60, -20)),
             _with(_ARMS_DOWN, right_upper_arm=(0, 0, -60), right_lower_arm=(0, 20, -20), right_hand=(0, 0, 30))],
    "sit": [_with(_ARMS_DOWN, left_upper_leg=(-90, 0, 5), right_upper_leg=(-90, 0, -5), left_lower_leg=(90, 0, 0),
                  right_lower_leg=(90, 0, 0), left_lower_arm=(0, -60, 0), right_lower_arm=(0, 60, 0)),
            _with(_ARMS_DOWN, spine=(5, 0, 0), left_upper_leg=(-85, 0, 10), right_upper_leg=(-85, 0, -10),
                  left_lower_leg=(80, 0, 0), right_lower_leg=(95, 0, 0), left_lower_arm=(0, -70, 0),
                  right_lower_arm=(0, 70, 0), head=(10, -15, 0))],
    "squat": [_ARMS_DOWN, _with(_ARMS_DOWN, spine=(30, 0, 0), left_upper_leg=(-100, 0, 15),
                                right_upper_leg=(-100, 0, -15), left_lower_leg=(130, 0, 0), right_lower_leg=(130, 0, 0),
                                left_foot=(-30, 0, 0), right_foot=(-30, 0, 0), left_upper_arm=(0, -80, -10),
                                right_upper_arm=(0, 80, 10))],
    "kneel": [_with(_ARMS_DOWN, left_upper_leg=(-90, 0, 0), left_lower_leg=(90, 0, 0), right_upper_leg=(0, 0, 0),
                    right_lower_leg=(90, 0, 0), right_foot=(40, 0, 0)),
              _with(_ARMS_DOWN, left_upper_leg=(-80, 0, 5), left_lower_leg=(85, 0, 0), right_lower_leg=(95, 0, 0),
                    spine=(10, 0, 0), head=(15, 0, 0))],
    "dance": [_with(_ARMS_UP, hips=(0, 20, 5), spine=(0, 0, 10), left_upper_leg=(-20, 0, 10)),
              _with(_ARMS_DOWN, hips=(0, -20, -5), spine=(0, 0, -10), right_upper_leg=(-20, 0, -10),
                    left_upper_arm=(0, -40, 20), right_upper_arm=(0, -40, -20))],
    "reach": [_ARMS_DOWN, _with(_ARMS_DOWN, spine=(15, -10, 0), right_upper_arm=(0, 80, -30),
                                right_lower_arm=(0, 5, 0), head=(-10, -10, 0))],
    "turn": [_with(_ARMS_DOWN, hips=(0, -30, 0), head=(0, -30, 0)), _with(_ARMS_DOWN, hips=(0, 30, 0), head=(0, 30, 0))],
    "bow": [_ARMS_DOWN, _with(_ARMS_DOWN, spine=(30, 0, 0), chest=(25, 0, 0), neck=(15, 0, 0),
                              left_upper_arm=(0, -20, -80), right_upper_arm=(0, 20, 80))],
    "kick": [_ARMS_DOWN, _with(_ARMS_DOWN, right_upper_leg=(-80, 0, 0), right_lower_leg=(10, 0, 0),
                               left_lower_leg=(10, 0, 0), spine=(-10, 0, 0), left_upper_arm=(0, 0, -30),
                               right_upper_arm=(0, 0, 30))],
    "punch": [_with(_ARMS_DOWN, left_upper_arm=(0, -60, -60), left_lower_arm=(0, -120, 0),
                    right_upper_arm=(0, 60, 60), right_lower_arm=(0, 120, 0)),
              _with(_ARMS_DOWN, left_upper_arm=(0, -60, -60), left_lower_arm=(0, -120, 0),
                    right_upper_arm=(0, 85, 10), right_lower_arm=(0, 0, 0), chest=(0, -20, 0))],
    "crouch": [_CROUCHED, _with(_CROUCHED, spine=(40, 0, 0), neck=(-20, 0, 0), left_lower_leg=(110, 0, 0),
                                right_lower_leg=(110, 0, 0), left_upper_leg=(-75, 0, 0), right_upper_leg=(-75, 0, 0))],
    "climb": [_with(_ARMS_DOWN, left_upper_arm=(0, 0, 70), left_lower_arm=(0, -40, 0), right_upper_leg=(-60, 0, 0),
                    right_lower_leg=(80, 0, 0)),
              _with(_ARMS_DOWN, right_upper_arm=(0, 0, -70), right_lower_arm=(0, 40, 0), left_upper_leg=(-60, 0, 0),
                    left_lower_leg=(80, 0, 0))],
    "lie": [_with(_ARMS_DOWN, hips=(-90, 0, 0)), _with(_ARMS_DOWN, hips=(-90, 0, 10), head=(0, 30, 0),
                                                      left_upper_leg=(-20, 0, 0), left_lower_leg=(40, 0, 0))],
    "stretch": [_ARMS_UP, _with(_ARMS_UP, spine=(0, 0, 15), chest=(0, 0, 10)),
                _with(_ARMS_UP, spine=(-10, 0, 0), chest=(-5, 0, 0))],
}


def _interpolate(a: Pose, b: Pose, w: float) -> Pose:
    out = {}
    for joint in set(a) | set(b):
        va, vb = np.array(a.get(joint, (0, 0, 0)), float), np.array(b.get(joint, (0, 0, 0)), float)
        out[joint] = [round(float(x), 4) for x in (1 - w) * va + w * vb]
    return out


def builtin_motion(name: str, frames: int = 60, fps: float = 30.0) -> Motion:
    """One cycle of a built-in clip, eased between its keyframes."""
    keys = CLIPS[name]
    poses = []
    for f in range(frames):
        phase = f / frames * len(keys)
        k = int(phase)
        w = 0.5 - 0.5 * np.cos(np.pi * (phase - k))  # ease in and out
        poses.append(_interpolate(keys[k], keys[(k + 1) % len(keys)], w))
    return Motion(name, 1.0 / fps, poses)
