"""Helpers shared by test modules (fixtures live in conftest.py). Test modules import from here,
never from one another. The project's packages are imported inside the functions, so importing
this module (test_layering does, for ROOT) loads none of them."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]  # the repository


# ---- shards: small synthetic records and raw tars -----------------------------------------------

def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def make_record(key: str, split: str = "train") -> dict:
    """A small valid synthetic_pair record (24 x 16 pixels), its members encoded."""
    from shards.schema import SYNTHETIC_PAIR
    src = np.zeros((24, 16, 4), np.uint8)
    src[8:16, 4:12] = 200
    kp = [[8.0, 12.0, 1.0]] * 18
    meta = {"schema": SYNTHETIC_PAIR.tag, "character_id": "c", "pose_id": 1, "view_id": 0, "seed": 3,
            "renderer": {"name": "test", "version": "0"}, "split": split,
            "src": {"spec": {}, "keypoints": kp}, "std": {"spec": {}, "keypoints": kp, "face_box": [1, 1, 5, 5]}}
    return {"__key__": key, "src.png": png_bytes(src), "std.png": png_bytes(np.full((24, 16, 3), 255, np.uint8)),
            "json": json.dumps(meta).encode()}


def write_shard(directory, name="shard-000000", keys=("a-1", "a-2")):
    """A synthetic_pair shard of ``keys`` and one reject (a-9), with its manifest; returns the manifest."""
    from shards.schema import SYNTHETIC_PAIR
    from shards.writer import ShardWriter
    with ShardWriter(directory, name, SYNTHETIC_PAIR, "cfg") as writer:
        for key in keys:
            writer.write(make_record(key))
        writer.write({"__key__": "a-9", "status": "rejected", "error": "character: broken"})
    return writer.manifest


def raw_tar(path, members):
    """A tar of (name, bytes) members as given, bypassing the writer's checks."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# ---- characters: a good .glb rewritten into broken ones ----------------------------------------

def rewrite_glb(good: Path, out: Path, edit) -> Path:
    """``good`` with ``edit(gltf_json)`` applied, written to ``out``."""
    from render.gltf import Glb, GlbBuilder
    builder = GlbBuilder.from_glb(Glb.load(good))
    edit(builder.gltf)
    out.write_bytes(builder.to_bytes())
    return out


def make_unskinned(good: Path, tmp: Path) -> Path:
    def edit(gltf):
        del gltf["skins"]
        del gltf["nodes"][0]["skin"]
    return rewrite_glb(good, tmp / "unskinned.glb", edit)


def make_unmappable(good: Path, tmp: Path) -> Path:
    def edit(gltf):
        for i, node in enumerate(gltf["nodes"][1:]):
            node["name"] = f"Bone.{i:03d}"
    return rewrite_glb(good, tmp / "unmappable.glb", edit)


def make_cyclic(good: Path, tmp: Path) -> Path:
    def edit(gltf):
        gltf["nodes"][2].setdefault("children", []).append(1)  # spine -> hips: a loop
    return rewrite_glb(good, tmp / "cyclic.glb", edit)


# ---- motions: skeleton-only glTF and VRM Animation (.vrma) files from a canonical motion --------

VRM_BONE_NAMES = {"hips": "hips", "spine": "spine", "chest": "chest", "neck": "neck", "head": "head",
                  **{f"{side}_{joint}": f"{side}{part}" for side in ("left", "right") for joint, part in (
                      ("shoulder", "Shoulder"), ("upper_arm", "UpperArm"), ("lower_arm", "LowerArm"), ("hand", "Hand"),
                      ("upper_leg", "UpperLeg"), ("lower_leg", "LowerLeg"), ("foot", "Foot"), ("toes", "Toes"))}}


def write_skeleton_motion(motion, path: Path, names: dict | None = None, rest_pose: dict | None = None,
                          roll_degrees: float = 0.0, vrma: bool = False, human_bones: dict | None = None,
                          expressions: list[dict] | None = None, seed: int = 0) -> Path:
    """``motion`` as a binary glTF of nodes only (no mesh, no skin), one rotation key per frame.

    ``names``: canonical joint -> node name (default: canonical names, or VRM's for a .vrma).
    ``rest_pose``: the canonical pose the skeleton rests in (e.g. A_POSE); ``roll_degrees``: random
    bone rolls. ``vrma``: a VRM Animation file: a VRMC_vrm_animation extension whose humanBones
    table maps ``human_bones`` (canonical joint -> node name; default ``names``), an upperChest node
    between chest and neck, and VRM expression preset nodes keyed from ``expressions`` (per frame,
    preset -> weight, as the node's x translation)."""
    from render.characters import Character
    from render.geometry import matrix_to_quaternion, rotation_about, transform
    from render.gltf import GlbBuilder
    from render.poses import joint_rotations, posed_positions
    from render.skeleton import JOINT_PARENTS, JOINTS, PRIMARY_CHILD, rest_positions

    names = dict(names or (VRM_BONE_NAMES if vrma else {j: j for j in JOINTS}))
    rest_pose = rest_pose or {}
    rotations, positions = joint_rotations(rest_pose), posed_positions(rest_pose, rest_positions())
    rng = np.random.default_rng(seed)
    world = {}
    for joint in JOINTS:
        frame = rotations[joint]
        if roll_degrees and joint in PRIMARY_CHILD:
            axis = positions[PRIMARY_CHILD[joint]] - positions[joint]
            frame = rotation_about(axis, float(rng.uniform(-roll_degrees, roll_degrees))) @ frame
        world[joint] = transform(frame, positions[joint])
    node_names, parents, globals_ = list(JOINTS), [JOINTS.index(JOINT_PARENTS[j]) if JOINT_PARENTS[j] else -1
                                                  for j in JOINTS], [world[j] for j in JOINTS]
    if vrma:  # an unmapped bone between chest and neck, as VRM skeletons have
        upper = world["chest"].copy()
        upper[:3, 3] = (positions["chest"] + positions["neck"]) / 2
        node_names.append("upperChest")
        parents.append(JOINTS.index("chest"))
        globals_.append(upper)
        parents[JOINTS.index("neck")] = len(node_names) - 1
    # parents-first order for the skeleton model: upperChest (last) must precede the neck's subtree
    order = sorted(range(len(node_names)), key=lambda n: _depth(parents, n))
    at = {old: new for new, old in enumerate(order)}
    node_names = [node_names[n] for n in order]
    parents = [at[parents[n]] if parents[n] >= 0 else -1 for n in order]
    globals_ = [globals_[n] for n in order]
    local = np.stack([g if p < 0 else np.linalg.inv(globals_[p]) @ g for g, p in zip(globals_, parents)])
    skeleton = Character("writer", "", [], node_names, np.array(parents), local, np.zeros(0, int),
                         np.zeros((0, 4, 4)), {j: node_names.index(j) for j in JOINTS}, {})
    frames = [skeleton.node_globals(pose) for pose in motion.poses]
    file_name = {n: names.get(n, n) for n in node_names}
    builder = GlbBuilder()
    gltf = builder.gltf
    gltf["nodes"] = [{"name": file_name[n], "translation": local[i][:3, 3].tolist(),
                      "rotation": matrix_to_quaternion(local[i][:3, :3]).tolist()} for i, n in enumerate(node_names)]
    for i, p in enumerate(parents):
        if p >= 0:
            gltf["nodes"][p].setdefault("children", []).append(i)
    times = builder.accessor(np.arange(len(frames), dtype=np.float32) * np.float32(motion.frame_time), "SCALAR",
                             target=None, with_bounds=True)
    channels, samplers = [], []
    for i, p in enumerate(parents):
        quats = [matrix_to_quaternion((g[i] if p < 0 else np.linalg.inv(g[p]) @ g[i])[:3, :3]) for g in frames]
        samplers.append({"input": times, "output": builder.accessor(np.array(quats, np.float32), "VEC4", target=None),
                         "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": i, "path": "rotation"}})
    roots = [i for i, p in enumerate(parents) if p < 0]
    if vrma:
        by_name = {file_name[n]: i for i, n in enumerate(node_names)}
        bones = human_bones or names
        extension = {"specVersion": "1.0", "humanoid": {"humanBones": {
            VRM_BONE_NAMES[joint]: {"node": by_name[bone]} for joint, bone in bones.items()}}}
        presets = sorted({k for weights in expressions or [] for k in weights})
        for preset in presets:
            gltf["nodes"].append({"name": f"expression_{preset}"})
            roots.append(len(gltf["nodes"]) - 1)
            extension.setdefault("expressions", {"preset": {}})["preset"][preset] = {"node": roots[-1]}
            values = np.array([[w.get(preset, 0.0), 0, 0] for w in expressions], np.float32)
            samplers.append({"input": times, "output": builder.accessor(values, "VEC3", target=None),
                             "interpolation": "LINEAR"})
            channels.append({"sampler": len(samplers) - 1, "target": {"node": roots[-1], "path": "translation"}})
        gltf["extensionsUsed"] = ["VRMC_vrm_animation"]
        gltf["extensions"] = {"VRMC_vrm_animation": extension}
    gltf["animations"] = [{"name": motion.name, "channels": channels, "samplers": samplers}]
    gltf["scenes"], gltf["scene"] = [{"nodes": roots}], 0
    path = Path(path)
    path.write_bytes(builder.to_bytes())
    return path


def _depth(parents: list[int], node: int) -> int:
    depth = 0
    while parents[node] >= 0:
        node, depth = parents[node], depth + 1
    return depth


def max_joint_error(a: list[dict], b: list[dict]) -> float:
    """The largest angle (degrees) between two pose lists' joint rotations, over joints and frames."""
    from render.geometry import rotation_xyz
    worst = 0.0
    for pa, pb in zip(a, b, strict=True):
        for joint in set(pa) | set(pb):
            r = rotation_xyz(pa.get(joint, (0, 0, 0))).T @ rotation_xyz(pb.get(joint, (0, 0, 0)))
            worst = max(worst, float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))))
    return worst
