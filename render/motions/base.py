"""What every motion module shares: the Motion (canonical poses per frame), MotionError (a file's
reject reason) and the skeleton-only Character that every reader turns its file's skeleton into, so
motions are read through the same rest alignment that poses rigs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from render.poses import Pose


class MotionError(ValueError):
    """A motion file that cannot be used; the message is the reject reason."""


@dataclass
class Motion:
    name: str
    frame_time: float
    poses: list[Pose]  # one canonical pose per frame
    source: str = ""   # the file it came from, or "builtin"
    expressions: list[dict[str, float]] | None = None  # per frame, canonical expression -> weight (.vrma)
    root: np.ndarray | None = None  # (F, 3) the hips' translation in metres (pairforge's frame), if the file has one


def skeleton_character(name: str, names: list[str], parents, local_rest, joint_nodes: dict[str, int]):
    """A skeleton-only Character (no mesh): its rest alignment and pose_from_world are the ones
    that pose rigs, so motions are read exactly as characters are posed."""
    from render.characters import Character
    return Character(name, "", [], list(names), np.asarray(parents), np.asarray(local_rest, float),
                     np.zeros(0, int), np.zeros((0, 4, 4)), dict(joint_nodes), {})
