"""BVH, the plain-text motion-capture format: a numpy reader (any channel order, y- or z-up, any
rest pose) and a writer of the canonical skeleton (T- or any other rest)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from render.bonemap import UnmappableRig, map_bones
from render.geometry import euler_xyz
from render.motions.base import Motion, MotionError, skeleton_character
from render.poses import Pose, posed_positions
from render.skeleton import JOINT_PARENTS, JOINTS, Proportions, rest_positions

_AXES = {"Xrotation": "x", "Yrotation": "y", "Zrotation": "z"}


def _axis_rotation(axis: str, degrees: np.ndarray) -> np.ndarray:
    """(F,) angles about one axis -> (F, 3, 3)."""
    r = np.radians(degrees)
    c, s = np.cos(r), np.sin(r)
    m = np.zeros((len(r), 3, 3))
    i = "xyz".index(axis)
    j, k = (i + 1) % 3, (i + 2) % 3
    m[:, i, i] = 1
    m[:, j, j], m[:, j, k], m[:, k, j], m[:, k, k] = c, -s, s, c
    return m


def _parse_hierarchy(tokens: list[str], name: str):
    """BVH tokens -> (joint names, parents, offsets, channels, index of MOTION)."""
    names, parents, offsets, channels, stack, i = [], [], [], [], [], 1
    while tokens[i] != "MOTION":
        word = tokens[i]
        if word in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            offsets.append(np.zeros(3))
            channels.append([])
            i += 2
        elif word == "{":
            stack.append(len(names) - 1)
            i += 1
        elif word == "}":
            stack.pop()
            i += 1
        elif word == "End":  # End Site { OFFSET x y z }: no joint, skip it whole
            i += 8
        elif word == "OFFSET":
            offsets[-1] = np.array(tokens[i + 1:i + 4], dtype=float)
            i += 4
        elif word == "CHANNELS":
            count = int(tokens[i + 1])
            channels[-1] = tokens[i + 2:i + 2 + count]
            i += 2 + count
        else:
            raise MotionError(f"{name}: unexpected {word!r} in the hierarchy")
    return names, parents, offsets, channels, i


def _file_axes(names: list[str], parents: list[int], offsets: list[np.ndarray], mapping: dict[str, str]) -> np.ndarray:
    """Rows: the file's directions of our x (the character's left), y (up) and z (forward), found
    from its rest skeleton, so y-up and z-up files (Blender's) read alike."""
    position = []
    for k, offset in enumerate(offsets):
        position.append(offset + (position[parents[k]] if parents[k] >= 0 else 0))
    at = {joint: position[names.index(bone)] for joint, bone in mapping.items()}
    up = at["head"] - at["hips"]
    left = at["left_upper_leg"] - at["right_upper_leg"]
    snap = lambda v: np.eye(3)[np.argmax(np.abs(v))] * np.sign(v[np.argmax(np.abs(v))])  # noqa: E731
    up, left = snap(up), snap(left)
    if abs(up @ left) > 0.5:
        raise MotionError("cannot tell up from left in the rest skeleton")
    return np.stack([left, up, np.cross(left, up)])


def read_bvh(path: str | Path) -> Motion:
    """A BVH file -> a canonical Motion. Rotations are relative to the file's rest (its OFFSETs, a
    T-pose in world-aligned frames); y-up and z-up files are both understood; root translation
    is dropped."""
    path = Path(path)
    try:
        text = path.read_text(errors="strict")
    except (OSError, UnicodeDecodeError) as error:
        raise MotionError(f"{path.name}: cannot read ({error})") from None
    tokens = text.split()
    if not tokens or tokens[0] != "HIERARCHY" or "MOTION" not in tokens:
        raise MotionError(f"{path.name}: not a BVH file (no HIERARCHY/MOTION sections)")
    try:
        names, parents, offsets, channels, i = _parse_hierarchy(tokens, path.name)
        frames = int(tokens[tokens.index("Frames:", i) + 1])
        frame_time = float(tokens[tokens.index("Time:", i) + 1])
        values = np.array(tokens[tokens.index("Time:", i) + 2:], dtype=float)
    except (IndexError, ValueError) as error:
        if isinstance(error, MotionError):
            raise
        raise MotionError(f"{path.name}: malformed BVH ({error})") from None
    width = sum(len(c) for c in channels)
    if width == 0 or frames <= 0 or len(values) < frames * width:
        raise MotionError(f"{path.name}: truncated motion data ({len(values)} numbers for {frames} frames of "
                          f"{width} channels)")
    data = values[:frames * width].reshape(frames, width)
    try:
        mapping = map_bones(names)
    except UnmappableRig as error:
        raise MotionError(f"{path.name}: joints do not map to the humanoid skeleton: {error}") from None
    axes = _file_axes(names, parents, offsets, mapping)
    column, local, root = 0, [], None
    for name, chans in zip(names, channels):
        rotation = np.tile(np.eye(3), (frames, 1, 1))
        for k, channel in enumerate(chans):
            if channel in _AXES:  # BVH composes rotations in the listed order
                rotation = rotation @ _axis_rotation(_AXES[channel], data[:, column + k])
            elif not channel.endswith("position"):
                raise MotionError(f"{path.name}: unknown channel {channel!r} on {name}")
        if name == mapping["hips"] and all(f"{a}position" in chans for a in "XYZ"):
            root = data[:, [column + chans.index(f"{a}position") for a in "XYZ"]] @ axes.T
        local.append(axes @ rotation @ axes.T)  # into our axes
        column += len(chans)
    # The file's rest (its OFFSETs, joint frames world-aligned) as a skeleton: its alignment to the
    # canonical T-pose undoes an A-pose or any other rest, as it does for rigs.
    from render.geometry import transform
    index = {bone: names.index(bone) for bone in mapping.values()}
    skeleton = skeleton_character(path.stem, names, parents, [transform(translation=axes @ o) for o in offsets],
                         {joint: index[bone] for joint, bone in mapping.items()})
    world = np.tile(np.eye(4), (frames, len(names), 1, 1))
    for n, parent in enumerate(parents):
        world[:, n, :3, :3] = local[n] if parent < 0 else world[:, parent, :3, :3] @ local[n]
    poses = [skeleton.pose_from_world(world[f]) for f in range(frames)]
    return Motion(path.stem, frame_time, poses, root=root)


def write_bvh(motion: Motion, path: str | Path, proportions: Proportions = Proportions(),
              rest_pose: Pose | None = None) -> Path:
    """The canonical skeleton (offsets in metres) and ``motion`` as BVH, ZYX channels. The rest is
    the T-pose, or the canonical skeleton under ``rest_pose`` (e.g. poses.A_POSE: an A-rest file,
    its channels relative to that rest, as such files ship)."""
    canonical = rest_positions(proportions)
    rest = posed_positions(rest_pose, canonical) if rest_pose else canonical
    if rest_pose:  # the channels of a file at this rest: the same skeleton's alignment, run forwards
        from render.geometry import transform
        parents = [JOINTS.index(JOINT_PARENTS[j]) if JOINT_PARENTS[j] else -1 for j in JOINTS]
        local = [transform(translation=rest[j] - (rest[JOINT_PARENTS[j]] if JOINT_PARENTS[j] else 0)) for j in JOINTS]
        skeleton = skeleton_character("rest", list(JOINTS), parents, local, {j: i for i, j in enumerate(JOINTS)})
        file_poses = []
        for pose in motion.poses:
            world = skeleton.node_globals(pose)[:, :3, :3]
            file_poses.append({j: list(euler_xyz(world[i] if parents[i] < 0 else world[parents[i]].T @ world[i]))
                               for i, j in enumerate(JOINTS)})
        motion = Motion(motion.name, motion.frame_time, file_poses)
    children = {j: [c for c in JOINTS if JOINT_PARENTS[c] == j] for j in JOINTS}
    lines = ["HIERARCHY"]

    def emit(joint: str, depth: int) -> None:
        pad = "  " * depth
        parent = JOINT_PARENTS[joint]
        offset = rest[joint] - (rest[parent] if parent else 0)
        lines.append(f"{pad}{'ROOT' if parent is None else 'JOINT'} {joint}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}")
        lines.append(f"{pad}  CHANNELS {'6 Xposition Yposition Zposition ' if parent is None else '3 '}"
                     "Zrotation Yrotation Xrotation")
        for child in children[joint]:
            emit(child, depth + 1)
        if not children[joint]:
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET 0 0 0", f"{pad}  }}"])
        lines.append(f"{pad}}}")

    emit("hips", 0)
    order = []

    def walk(joint: str) -> None:
        order.append(joint)
        for child in children[joint]:
            walk(child)

    walk("hips")
    lines += ["MOTION", f"Frames: {len(motion.poses)}", f"Frame Time: {motion.frame_time:.6f}"]
    for pose in motion.poses:
        row = [*rest["hips"]]
        for joint in order:
            rx, ry, rz = pose.get(joint, (0.0, 0.0, 0.0))
            row += [rz, ry, rx]  # R = Rz Ry Rx: listed (and composed) Z, Y, X
        lines.append(" ".join(f"{v:.6f}" for v in row))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
