"""Motions on the canonical skeleton: readers for BVH (numpy; any channel order and rest pose),
glTF clips (rigged characters, skeleton-only files and VRM Animation .vrma) and FBX (through the
Blender worker), a BVH writer, 18 built-in parametric clips so demos and tests need no download,
and unique poses: frames sampled from clips (sub-frames where a library is short of a target) with
near-duplicates dropped, as a pose table with motion and frame lineage.

Every reader goes through one path: the file's skeleton (node names, parents, rest matrices)
becomes a skeleton-only Character, whose rest alignment (render.characters) turns the file's posed
world rotations into canonical poses, so a T- or an A-rest file, any bone rolls and any naming
give the same poses."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from render.bonemap import UnmappableRig, map_bones
from render.geometry import euler_xyz
from render.poses import Pose, posed_positions
from render.skeleton import JOINT_PARENTS, JOINTS, Proportions, rest_positions


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


def _skeleton(name: str, names: list[str], parents, local_rest, joint_nodes: dict[str, int]):
    """A skeleton-only Character (no mesh): its rest alignment and pose_from_world are the ones
    that pose rigs, so motions are read exactly as characters are posed."""
    from render.characters import Character
    return Character(name, "", [], list(names), np.asarray(parents), np.asarray(local_rest, float),
                     np.zeros(0, int), np.zeros((0, 4, 4)), dict(joint_nodes), {})


def _check_required(name: str, joint_nodes: dict[str, int], where: str) -> None:
    from render.skeleton import REQUIRED_JOINTS
    missing = [j for j in REQUIRED_JOINTS if j not in joint_nodes]
    if missing:
        raise MotionError(f"{name}: not a humanoid skeleton ({where} lacks {', '.join(missing)})")


# -- BVH ---------------------------------------------------------------------------------------

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
    skeleton = _skeleton(path.stem, names, parents, [transform(translation=axes @ o) for o in offsets],
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
        skeleton = _skeleton("rest", list(JOINTS), parents, local, {j: i for i, j in enumerate(JOINTS)})
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


# -- built-in clips ----------------------------------------------------------------------------

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


# -- unique poses ------------------------------------------------------------------------------

def pose_signature(pose: Pose, rest: dict[str, np.ndarray]) -> np.ndarray:
    """Joint positions relative to the hips, in heights: what two poses are compared by."""
    positions = posed_positions(pose, rest)
    hips = positions["hips"]
    return np.concatenate([positions[j] - hips for j in JOINTS]) / Proportions().height


def _blend(a: Pose, b: Pose, w: float) -> Pose:
    """A pose between two frames: each joint's rotation interpolated along the shorter arc."""
    from render.geometry import matrix_to_quaternion, quaternion_to_matrix, rotation_xyz
    out = {}
    for joint in set(a) | set(b):
        qa = matrix_to_quaternion(rotation_xyz(a.get(joint, (0, 0, 0))))
        qb = matrix_to_quaternion(rotation_xyz(b.get(joint, (0, 0, 0))))
        angles = euler_xyz(quaternion_to_matrix(_slerp(qa, qb, w)))
        if np.abs(angles).max() > 1e-4:
            out[joint] = [round(float(x), 4) for x in angles]
    return out


def _candidates(motion: Motion, every: int, substeps: int):
    """(frame, pose) to sample from a motion: every ``every``-th frame, and ``substeps - 1``
    interpolated sub-frames between it and the next frame (frame is then fractional)."""
    for frame in range(0, len(motion.poses), every):
        yield frame, motion.poses[frame]
        if frame + 1 < len(motion.poses):
            for k in range(1, substeps):
                yield round(frame + k / substeps, 4), _blend(motion.poses[frame], motion.poses[frame + 1], k / substeps)


def unique_poses(motions: list[Motion], every: int = 1, threshold: float = 0.015, substeps: int = 1) -> list[dict]:
    """Frames (every ``every``-th, with ``substeps - 1`` interpolated sub-frames after each) of all
    motions, dropping any whose joints all lie within ``threshold`` heights (mean distance) of a
    pose already kept. Rows keep motion and frame (and the frame's expression and root, if any)."""
    rest = rest_positions(Proportions())
    kept, signatures, count = [], np.empty((256, len(JOINTS), 3)), 0
    for motion in motions:
        for frame, pose in _candidates(motion, every, substeps):
            signature = pose_signature(pose, rest).reshape(len(JOINTS), 3)
            if count and (np.linalg.norm(signatures[:count] - signature, axis=2).mean(1) < threshold).any():
                continue
            if count == len(signatures):
                signatures = np.concatenate([signatures, np.empty_like(signatures)])
            signatures[count] = signature
            count += 1
            row = {"pose_id": len(kept), "motion": motion.name, "frame": frame, "pose": pose}
            nearest = min(int(round(frame)), len(motion.poses) - 1)
            if motion.expressions and motion.expressions[nearest]:
                row["expression"] = motion.expressions[nearest]
            if motion.root is not None:
                row["root"] = [round(float(x), 5) for x in motion.root[nearest]]
            kept.append(row)
    return kept


MAX_SUBSTEPS = 16


def pose_library(motions: list[Motion], target: int = 0, every: int = 1, threshold: float = 0.015
                 ) -> tuple[list[dict], dict]:
    """Unique poses across ``motions`` towards ``target`` (0: all there are at every frame). While
    short of the target, frames are sampled more densely (2, 4, ... up to MAX_SUBSTEPS sub-frames
    interpolated between frames) until the target is reached or denser sampling stops adding
    poses; above it, an even spread of ``target`` rows is kept (renumbered). The report says how
    dense the sampling was and whether the target was reached, and if not, why."""
    substeps = 1
    rows = unique_poses(motions, every, threshold, substeps)
    saturated = False
    while target and len(rows) < target and substeps < MAX_SUBSTEPS:
        denser = unique_poses(motions, every, threshold, substeps * 2)
        substeps *= 2
        if len(denser) < len(rows) * 1.02 + 1:  # interpolation adds (almost) nothing new
            rows, saturated = max(rows, denser, key=len), True
            break
        rows = denser
    found = len(rows)
    if target and len(rows) > target:
        keep = np.unique(np.linspace(0, len(rows) - 1, target).round().astype(int))
        rows = [{**rows[i], "pose_id": n} for n, i in enumerate(keep)]
    report = {"target": target, "found": found, "kept": len(rows), "substeps": substeps, "threshold": threshold,
              "reached": not target or found >= target}
    if not report["reached"]:
        why = "denser sampling adds no new poses" if saturated else f"sampling at {substeps} sub-frames per frame"
        report["reason"] = (f"the motions give {found} unique poses at threshold {threshold} ({why}), short of the "
                            f"target {target}: add motions or lower --threshold")
    return rows, report


def write_pose_table(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    return path


def read_pose_table(path: str | Path) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if [r["pose_id"] for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: pose ids must run 0..{len(rows) - 1} in order")
    return rows


MOTION_SUFFIXES = (".bvh", ".fbx", ".glb", ".vrma", ".vrm")


def read_fbx_motion(path: str | Path, backend=None) -> Motion:
    """An animated FBX (Mixamo's ``mixamorig:`` rigs and others, with or without a mesh) -> a
    canonical Motion, read by bpy's FBX importer in a Blender worker process (``backend``, a
    BlenderBackend; one is started and closed here if not given). The hips' translation is kept
    in ``root``; the poses are root-relative."""
    from render.backends.blender_backend import BlenderBackend
    from render.characters import CharacterError
    path = Path(path)
    own = backend is None
    if own:
        from render.backends.settings import BlenderSettings
        backend = BlenderBackend(BlenderSettings(engine="BLENDER_WORKBENCH", device="cpu"))
    try:
        reply = backend.read_motion(path)
    except CharacterError as error:
        raise MotionError(str(error).split(" (log ")[0]) from None
    finally:
        if own:
            backend.close()
    names, parents = list(reply["bones"]), np.asarray(reply["parents"])
    rest, world = np.asarray(reply["rest"], float), np.asarray(reply["world"], float)
    if not len(world):
        raise MotionError(f"{path.name}: empty animation (no frames)")
    try:
        mapping = map_bones(names)
    except UnmappableRig as error:
        raise MotionError(f"{path.name}: not a humanoid skeleton ({error})") from None
    local = np.stack([r if p < 0 else np.linalg.inv(rest[p]) @ r for r, p in zip(rest, parents)])
    skeleton = _skeleton(path.stem, names, parents, local, {j: names.index(b) for j, b in mapping.items()})
    poses = [skeleton.pose_from_world(w) for w in world]
    fps = float(reply.get("fps") or 30.0)
    return Motion(path.stem, 1.0 / fps, poses, root=world[:, names.index(mapping["hips"]), :3, 3].copy())


def load_motions(folders, keep_root: bool = False) -> tuple[list[Motion], list[str]]:
    """Motions from ``folders`` (one or a list): "builtin" (or None) is the built-in clips, a
    folder is every .bvh, .fbx, animated .glb/.vrm and .vrma under it. Returns the motions (each
    with its ``source``; names made unique) and the reasons of the files rejected, which never stop
    the others. ``keep_root``: keep the hips' translation (``Motion.root``), else drop it."""
    if folders is None or isinstance(folders, (str, Path)):
        folders = [folders]
    motions, rejects, backend = [], [], None
    try:
        for folder in folders:
            if folder in (None, "builtin"):
                for name in CLIPS:
                    motion = builtin_motion(name)
                    motion.source = "builtin"
                    motions.append(motion)
                continue
            if not Path(folder).is_dir():
                rejects.append(f"{folder}: no such folder")
                continue
            for path in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in MOTION_SUFFIXES):
                try:
                    if path.suffix.lower() == ".bvh":
                        found = [read_bvh(path)]
                    elif path.suffix.lower() == ".fbx":
                        if backend is None:
                            backend = _fbx_backend()
                        found = [read_fbx_motion(path, backend)]
                    else:
                        found = read_gltf_animations(path)
                except MotionError as error:
                    rejects.append(str(error))
                    continue
                except Exception as error:  # Blender missing or failing: the file's reject, not the run's end
                    if path.suffix.lower() != ".fbx":
                        raise
                    rejects.append(f"{path.name}: FBX needs the Blender worker ({type(error).__name__}: {error})")
                    continue
                for motion in found:
                    motion.source = str(path)
                motions += found
    finally:
        if backend is not None:
            backend.close()
    seen: dict[str, int] = {}
    for motion in motions:
        seen[motion.name] = seen.get(motion.name, 0) + 1
        if seen[motion.name] > 1:
            motion.name = f"{motion.name}-{seen[motion.name]}"
        if not keep_root:
            motion.root = None
    return motions, rejects


def _fbx_backend():
    from render.backends.blender_backend import BlenderBackend
    from render.backends.settings import BlenderSettings
    return BlenderBackend(BlenderSettings(engine="BLENDER_WORKBENCH", device="cpu", recycle_after=1000))


def motion_manifest(motions: list[Motion], rows: list[dict]) -> dict:
    """The motion library: each motion's source, frames, frame rate and unique poses kept."""
    kept: dict[str, int] = {}
    for row in rows:
        kept[row["motion"]] = kept.get(row["motion"], 0) + 1
    return {"motions": [{"name": m.name, "source": m.source, "frames": len(m.poses),
                         "fps": round(1.0 / m.frame_time, 3), "unique_poses": kept.get(m.name, 0)} for m in motions],
            "unique_poses": len(rows)}




COVERAGE_JOINTS = ("spine", "neck", "head", "left_upper_arm", "left_lower_arm", "right_upper_arm", "right_lower_arm",
                   "left_upper_leg", "left_lower_leg", "right_upper_leg", "right_lower_leg", "hips")


def coverage_plot(rows: list[dict], path: str | Path, bins: int = 24) -> Path:
    """Joint-angle coverage of a pose table: per joint, histograms of its x, y and z angles."""
    from PIL import Image, ImageDraw

    panel_w, panel_h, pad = 240, 110, 8
    cols = 3
    grid_rows = -(-len(COVERAGE_JOINTS) // cols)
    image = Image.new("RGB", (cols * (panel_w + pad) + pad, grid_rows * (panel_h + pad) + pad + 20), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, 4), f"joint-angle coverage of {len(rows)} poses (x red, y green, z blue; -180..180 deg)",
              fill="black")
    edges = np.linspace(-180, 180, bins + 1)
    for n, joint in enumerate(COVERAGE_JOINTS):
        x0 = pad + (n % cols) * (panel_w + pad)
        y0 = 20 + pad + (n // cols) * (panel_h + pad)
        draw.rectangle((x0, y0, x0 + panel_w, y0 + panel_h), outline=(180, 180, 180))
        draw.text((x0 + 4, y0 + 2), joint, fill="black")
        angles = np.array([row["pose"].get(joint, (0, 0, 0)) for row in rows], float).reshape(-1, 3)
        for axis, colour in enumerate(((220, 50, 50), (40, 160, 60), (50, 80, 220))):
            counts, _ = np.histogram(angles[:, axis], edges)
            top = max(counts.max(), 1)
            bar = panel_w / bins / 3
            for b, count in enumerate(counts):
                if count:
                    left = x0 + b * panel_w / bins + axis * bar
                    height = (panel_h - 16) * count / top
                    draw.rectangle((left, y0 + panel_h - height, left + bar - 1, y0 + panel_h), fill=colour)
    path = Path(path)
    image.save(path)
    return path


# -- glTF animation clips ------------------------------------------------------------------------

def _slerp(q0: np.ndarray, q1: np.ndarray, w: float) -> np.ndarray:
    q1 = q1 if q0 @ q1 >= 0 else -q1
    q = (1 - w) * q0 + w * q1  # normalised lerp: close to slerp for the small steps between keys
    return q / np.linalg.norm(q)


# VRM 1.0 humanoid bone names (VRMC_vrm and VRMC_vrm_animation) -> canonical joints; the others
# (upperChest, fingers, eyes, jaw) are left out and ride along between the mapped ones.
VRM_HUMAN_BONES = {"hips": "hips", "spine": "spine", "chest": "chest", "neck": "neck", "head": "head",
                   **{f"{side}{part}": f"{side}_{joint}" for side in ("left", "right") for part, joint in (
                       ("Shoulder", "shoulder"), ("UpperArm", "upper_arm"), ("LowerArm", "lower_arm"), ("Hand", "hand"),
                       ("UpperLeg", "upper_leg"), ("LowerLeg", "lower_leg"), ("Foot", "foot"), ("Toes", "toes"))}}
# VRM expression presets -> canonical expressions (render.expressions); several presets average.
VRM_EXPRESSIONS = {"happy": ("smile",), "aa": ("mouth_open",), "blink": ("eyes_closed",),
                   "blinkLeft": ("eyes_closed",), "blinkRight": ("eyes_closed",)}
GLTF_MOTION_SUFFIXES = (".glb", ".vrma", ".vrm")


def _node_tree(nodes: list[dict], name: str) -> tuple[list[int], np.ndarray]:
    """glTF node order made parents-first: (file index of each, parent position or -1)."""
    parent = {child: i for i, n in enumerate(nodes) for child in n.get("children", [])}
    order, placed = [], set()
    for i in range(len(nodes)):
        chain = [i]
        while chain[-1] in parent and parent[chain[-1]] not in placed:
            if parent[chain[-1]] in chain:
                raise MotionError(f"{name}: the node hierarchy has a cycle at node {i}")
            chain.append(parent[chain[-1]])
        for node in reversed(chain):
            if node not in placed:
                placed.add(node)
                order.append(node)
    at = {old: new for new, old in enumerate(order)}
    return order, np.array([at[parent[i]] if i in parent else -1 for i in order])


def _sample_track(times: np.ndarray, values: np.ndarray, interpolation: str, at: np.ndarray,
                  quaternion: bool) -> np.ndarray:
    """A glTF sampler's values at times ``at`` (LINEAR: nlerp for quaternions; STEP; CUBICSPLINE
    keyed values, interpolated linearly)."""
    if interpolation == "CUBICSPLINE":
        values = values[1::3]
    k = np.clip(np.searchsorted(times, at, side="right") - 1, 0, len(times) - 1)
    nxt = np.minimum(k + 1, len(times) - 1)
    span = np.where(nxt > k, times[nxt] - times[k], 1.0)
    w = np.where(nxt > k, np.clip((at - times[k]) / span, 0, 1), 0.0)[:, None]
    if interpolation == "STEP":
        w = np.zeros_like(w)
    a, b = values[k], values[nxt]
    if quaternion:
        b = np.where(((a * b).sum(1) < 0)[:, None], -b, b)
        q = (1 - w) * a + w * b
        return q / np.linalg.norm(q, axis=1, keepdims=True)
    return (1 - w) * a + w * b


def read_gltf_animations(path: str | Path, fps: float = 30.0) -> list[Motion]:
    """The animation clips of a .glb/.vrm/.vrma -> canonical Motions. A rigged character, a
    skeleton-only glTF and a VRM Animation file all work: bones map through the
    VRMC_vrm_animation humanBones table when the file has one (it wins over names), else through
    the bone-name tables (the skin's joints, or every node without a skin); the rest pose, bone
    rolls and naming are undone by the alignment that poses rigs. VRM expression tracks
    (``expressions.preset``, weight = the node's x translation) become canonical expressions."""
    from render.geometry import quaternion_to_matrix
    from render.gltf import Glb, GltfError

    path = Path(path)
    try:
        glb = Glb(path.read_bytes(), path.name)  # .vrma is binary glTF too, whatever its suffix
        gltf = glb.gltf
        nodes = gltf.get("nodes", [])
        order, parents = _node_tree(nodes, path.name)
        position = {old: new for new, old in enumerate(order)}
        names = [nodes[i].get("name", f"node{i}") for i in order]
        local_rest = np.stack([_node_matrix(nodes[i]) for i in order]) if order else np.zeros((0, 4, 4))
        vrma = gltf.get("extensions", {}).get("VRMC_vrm_animation")
        if vrma is not None:
            human = vrma.get("humanoid", {}).get("humanBones", {})
            joint_nodes = {VRM_HUMAN_BONES[bone]: position[entry["node"]] for bone, entry in human.items()
                           if bone in VRM_HUMAN_BONES}
            _check_required(path.name, joint_nodes, "the VRMC_vrm_animation humanBones table")
            presets = vrma.get("expressions", {}).get("preset", {})
            expression_nodes = {name: entry["node"] for name, entry in presets.items() if name in VRM_EXPRESSIONS}
        else:
            candidates = [position[j] for skin in gltf.get("skins", [])[:1] for j in skin["joints"]] \
                or list(range(len(order)))
            try:
                mapping = map_bones([names[n] for n in candidates])
            except UnmappableRig as error:
                raise MotionError(f"{path.name}: not a humanoid skeleton ({error})") from None
            by_name = {names[n]: n for n in candidates}
            joint_nodes = {joint: by_name[bone] for joint, bone in mapping.items()}
            expression_nodes = {}
        skeleton = _skeleton(path.stem, names, parents, local_rest, joint_nodes)
        animations = gltf.get("animations", [])
        if not animations:
            raise MotionError(f"{path.name}: empty animation (the file has no animation clips)")
        motions, empty = [], []
        for number, animation in enumerate(animations):
            clip = animation.get("name") or f"{path.stem}-{number}"
            rotations, translations = {}, {}
            for channel in animation.get("channels", []):
                target = channel.get("target", {})
                if "node" not in target or target.get("path") not in ("rotation", "translation"):
                    continue
                sampler = animation["samplers"][channel["sampler"]]
                times = glb.read(sampler["input"]).astype(float).reshape(-1)
                values = glb.read(sampler["output"]).astype(float)
                if not len(times) or not len(values):
                    continue
                track = (times, values, sampler.get("interpolation", "LINEAR"))
                (rotations if target["path"] == "rotation" else translations)[target["node"]] = track
            if not any(position[node] in joint_nodes.values() for node in rotations):
                empty.append(clip)
                continue
            end = max(times[-1] for times, _, _ in [*rotations.values(), *translations.values()])
            at = np.arange(int(np.floor(end * fps + 1e-3)) + 1) / fps  # float32 key times: no lost last frame
            world = np.tile(local_rest, (len(at), 1, 1, 1))
            for node, (times, values, how) in rotations.items():
                n = position[node]
                scale = np.cbrt(abs(np.linalg.det(local_rest[n][:3, :3])))
                for f, q in enumerate(_sample_track(times, values, how, at, True)):
                    world[f, n, :3, :3] = quaternion_to_matrix(q) * scale
            for n in range(len(order)):
                if parents[n] >= 0:
                    world[:, n] = world[:, parents[n]] @ world[:, n]
            poses = [skeleton.pose_from_world(w) for w in world]
            expressions = None
            if expression_nodes:
                weights: dict[str, list[np.ndarray]] = {}
                for preset, node in expression_nodes.items():
                    if node in translations:
                        times, values, how = translations[node]
                        for canonical in VRM_EXPRESSIONS[preset]:
                            weights.setdefault(canonical, []).append(
                                np.clip(_sample_track(times, values, how, at, False)[:, 0], 0.0, 1.0))
                mean = {name: np.mean(tracks, axis=0) for name, tracks in weights.items()}
                expressions = [{name: round(float(w[f]), 4) for name, w in mean.items() if w[f] > 1e-4}
                               for f in range(len(at))]
            hips = order[joint_nodes["hips"]]
            root = None
            if hips in translations:
                times, values, how = translations[hips]
                root = _sample_track(times, values, how, at, False)
            motions.append(Motion(clip, 1.0 / fps, poses, expressions=expressions, root=root))
        if not motions:
            raise MotionError(f"{path.name}: empty animation (no clip turns a mapped bone: {', '.join(empty)})")
        return motions
    except MotionError:
        raise
    except GltfError as error:  # its message names the file already
        raise MotionError(str(error) if str(error).startswith(path.name) else f"{path.name}: {error}") from None
    except OSError as error:
        raise MotionError(f"{path.name}: cannot read ({error.strerror or error})") from None
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise MotionError(f"{path.name}: malformed glTF ({type(error).__name__}: {error})") from None


def _node_matrix(node: dict) -> np.ndarray:
    from render.geometry import quaternion_to_matrix, transform
    if "matrix" in node:
        return np.asarray(node["matrix"], float).reshape(4, 4).T
    m = transform(quaternion_to_matrix(node.get("rotation", (0, 0, 0, 1))), node.get("translation", (0, 0, 0)))
    return m @ np.diag([*node.get("scale", (1, 1, 1)), 1.0])


def add_gltf_animation(glb_path: str | Path, motion: Motion, out_path: str | Path) -> Path:
    """Write ``glb_path`` again with ``motion`` as a glTF animation clip on its own rig (local
    rotations of the mapped joints, one key per frame)."""
    from render.characters import load_character
    from render.geometry import matrix_to_quaternion
    from render.gltf import Glb, GlbBuilder

    char = load_character(glb_path)
    builder = GlbBuilder.from_glb(Glb.load(glb_path))
    file_index = {node.get("name"): i for i, node in enumerate(builder.gltf["nodes"])}
    frames = [char.node_globals(pose) for pose in motion.poses]
    times = builder.accessor(np.arange(len(frames), dtype=np.float32) * np.float32(motion.frame_time), "SCALAR",
                             target=None, with_bounds=True)
    channels, samplers = [], []
    for joint, node in char.joint_nodes.items():
        parent = char.parents[node]
        quats = []
        for world in frames:
            local = world[node] if parent < 0 else np.linalg.inv(world[parent]) @ world[node]
            rotation = local[:3, :3] / np.cbrt(abs(np.linalg.det(local[:3, :3])))
            quats.append(matrix_to_quaternion(rotation))
        samplers.append({"input": times, "output": builder.accessor(np.array(quats, np.float32), "VEC4", target=None),
                         "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1,
                         "target": {"node": file_index[char.node_names[node]], "path": "rotation"}})
    builder.gltf.setdefault("animations", []).append({"name": motion.name, "channels": channels, "samplers": samplers})
    out_path = Path(out_path)
    out_path.write_bytes(builder.to_bytes())
    return out_path
