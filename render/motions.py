"""Motions on the canonical skeleton: a BVH reader and writer (numpy; any channel order; joints
mapped by the bone tables), 18 built-in parametric clips so demos and tests need no download,
and unique poses: frames sampled from clips with near-duplicates dropped, as a pose table with
motion and frame lineage."""
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
    column, per_joint = 0, {}
    for name, chans in zip(names, channels):
        rotation = np.tile(np.eye(3), (frames, 1, 1))
        for k, channel in enumerate(chans):
            if channel in _AXES:  # BVH composes rotations in the listed order
                rotation = rotation @ _axis_rotation(_AXES[channel], data[:, column + k])
            elif not channel.endswith("position"):
                raise MotionError(f"{path.name}: unknown channel {channel!r} on {name}")
        per_joint[name] = axes @ rotation @ axes.T  # into our axes
        column += len(chans)
    poses = []
    for f in range(frames):
        pose = {}
        for joint, bone in mapping.items():
            angles = euler_xyz(per_joint[bone][f])
            if np.abs(angles).max() > 1e-6:
                pose[joint] = [round(float(a), 4) for a in angles]
        poses.append(pose)
    return Motion(path.stem, frame_time, poses)


def write_bvh(motion: Motion, path: str | Path, proportions: Proportions = Proportions()) -> Path:
    """The canonical skeleton (T-pose offsets in metres) and ``motion`` as BVH, ZYX channels."""
    rest = rest_positions(proportions)
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


def unique_poses(motions: list[Motion], every: int = 1, threshold: float = 0.015) -> list[dict]:
    """Frames (every ``every``-th) of all motions, dropping any whose joints all lie within
    ``threshold`` heights (mean distance) of a pose already kept. Rows keep motion and frame."""
    rest = rest_positions(Proportions())
    kept, signatures = [], []
    for motion in motions:
        for frame in range(0, len(motion.poses), every):
            pose = motion.poses[frame]
            signature = pose_signature(pose, rest)
            if signatures:
                distances = np.abs(np.array(signatures) - signature).reshape(len(signatures), -1, 3)
                if (np.linalg.norm(distances, axis=2).mean(1) < threshold).any():
                    continue
            signatures.append(signature)
            kept.append({"pose_id": len(kept), "motion": motion.name, "frame": frame, "pose": pose})
    return kept


def write_pose_table(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    return path


def read_pose_table(path: str | Path) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if [r["pose_id"] for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: pose ids must run 0..{len(rows) - 1} in order")
    return rows


def load_motions(folder: str | Path | None) -> tuple[list[Motion], list[str]]:
    """The built-in clips (folder None or "builtin"), or every .bvh and animated .glb under a
    folder; returns the motions (each with its ``source``) and the reasons of the files rejected."""
    if folder in (None, "builtin"):
        motions = [builtin_motion(name) for name in CLIPS]
        for motion in motions:
            motion.source = "builtin"
        return motions, []
    motions, rejects = [], []
    for path in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".bvh", ".glb")):
        try:
            found = [read_bvh(path)] if path.suffix.lower() == ".bvh" else read_gltf_animations(path)
        except MotionError as error:
            rejects.append(str(error))
            continue
        for motion in found:
            motion.source = str(path)
        motions += found
    return motions, rejects


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


def read_gltf_animations(path: str | Path, fps: float = 30.0) -> list[Motion]:
    """The animation clips of a rigged .glb -> canonical Motions (the rig's rest pose, bone rolls
    and naming are undone by the same mapping that poses it)."""
    from render.characters import CharacterError, load_character
    from render.geometry import quaternion_to_matrix
    from render.gltf import Glb, GltfError

    path = Path(path)
    try:
        char = load_character(path)
        glb = Glb.load(path)
    except (CharacterError, GltfError) as error:
        raise MotionError(f"{path.name}: {error}") from None
    index = {name: i for i, name in enumerate(char.node_names)}
    motions = []
    for number, animation in enumerate(glb.gltf.get("animations", [])):
        tracks = {}
        for channel in animation["channels"]:
            target = channel["target"]
            if target.get("path") != "rotation" or "node" not in target:
                continue
            sampler = animation["samplers"][channel["sampler"]]
            name = glb.gltf["nodes"][target["node"]].get("name", f"node{target['node']}")
            tracks[index[name]] = (glb.read(sampler["input"]).astype(float), glb.read(sampler["output"]).astype(float))
        if not tracks:
            continue
        end = max(times[-1] for times, _ in tracks.values())
        poses = []
        for t in np.arange(0.0, end + 1e-9, 1.0 / fps):
            local = char.local_rest.copy()
            for node, (times, quats) in tracks.items():
                k = int(np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 1))
                nxt = min(k + 1, len(times) - 1)
                w = 0.0 if nxt == k else float(np.clip((t - times[k]) / (times[nxt] - times[k]), 0, 1))
                scale = np.cbrt(abs(np.linalg.det(local[node][:3, :3])))
                local[node][:3, :3] = quaternion_to_matrix(_slerp(quats[k], quats[nxt], w)) * scale
            world = np.empty_like(local)
            for n in range(len(local)):
                world[n] = local[n] if char.parents[n] < 0 else world[char.parents[n]] @ local[n]
            poses.append(char.pose_from_world(world))
        motions.append(Motion(animation.get("name", f"{path.stem}-{number}"), 1.0 / fps, poses))
    return motions


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
