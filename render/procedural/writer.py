"""Writing characters as .glb: one skinned, textured mesh with shape keys, its bones named after a
rig naming scheme, landmark nodes on the head, and the parameters in the asset extras; and
writing a seeded set of them."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from render.bonemap import BONE_NAMES
from render.geometry import matrix_to_quaternion
from render.gltf import ELEMENT_ARRAY_BUFFER, GlbBuilder
from render.procedural.body import SHAPE_KEYS, build_character
from render.procedural.params import CharacterParams, character_seed, sample_params
from render.procedural.rig import rest_rig
from render.skeleton import JOINT_PARENTS, JOINTS, LANDMARKS


def write_character_glb(p: CharacterParams, path: str | Path, scheme: str = "canonical", rest_pose: str = "T",
                        roll_degrees: float = 0.0) -> Path:
    """Build the character of ``p`` and write it as a skinned, textured .glb with shape keys, its
    bones named after ``scheme`` (canonical, mixamo, vroid, rigify, unreal, smpl), at rest in the
    ``rest_pose`` ("T" or "A") with random bone rolls up to ``roll_degrees``."""
    arrays = build_character(p)
    names = BONE_NAMES[scheme]
    rig = rest_rig(arrays, rest_pose, roll_degrees, p.seed)
    builder = GlbBuilder()
    gltf = builder.gltf
    attributes = {
        "POSITION": builder.accessor(arrays["positions"], "VEC3", with_bounds=True),
        "NORMAL": builder.accessor(arrays["normals"], "VEC3"),
        "TEXCOORD_0": builder.accessor(arrays["uvs"], "VEC2"),
        "JOINTS_0": builder.accessor(arrays["joints"], "VEC4"),
        "WEIGHTS_0": builder.accessor(arrays["weights"], "VEC4"),
    }
    targets = [{"POSITION": builder.accessor(arrays["morphs"][k], "VEC3", with_bounds=True)} for k in SHAPE_KEYS]
    indices = builder.accessor(arrays["faces"].reshape(-1), "SCALAR", target=ELEMENT_ARRAY_BUFFER)
    png = io.BytesIO()
    Image.fromarray(arrays["atlas"]).save(png, format="PNG")
    image = builder.image(png.getvalue())
    gltf["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
    gltf["textures"] = [{"source": image, "sampler": 0}]
    gltf["materials"] = [{"name": "body", "pbrMetallicRoughness": {
        "baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 0.8}}]
    gltf["meshes"] = [{"name": "body", "primitives": [{"attributes": attributes, "indices": indices, "material": 0,
                                                      "targets": targets}],
                       "weights": [0.0] * len(SHAPE_KEYS), "extras": {"targetNames": list(SHAPE_KEYS)}}]
    # Nodes: 0 is the skinned mesh, then one node per joint, then the head landmarks.
    joint_node = {j: 1 + i for i, j in enumerate(JOINTS)}
    nodes = [{"name": "body", "mesh": 0, "skin": 0}]
    for joint in JOINTS:
        parent = JOINT_PARENTS[joint]
        local = np.linalg.inv(rig[parent]) @ rig[joint] if parent else rig[joint]
        node = {"name": names[joint], "translation": [float(x) for x in local[:3, 3]]}
        if not np.allclose(local[:3, :3], np.eye(3), atol=1e-7):
            node["rotation"] = [float(x) for x in matrix_to_quaternion(local[:3, :3])]
        nodes.append(node)
    head_inverse = np.linalg.inv(rig["head"])
    for name in LANDMARKS:
        local = head_inverse @ np.append(arrays["landmarks"][name], 1.0)
        nodes.append({"name": f"kp_{name}", "translation": [float(x) for x in local[:3]]})
        nodes[joint_node["head"]].setdefault("children", []).append(len(nodes) - 1)
    for joint in JOINTS:
        parent = JOINT_PARENTS[joint]
        if parent:
            nodes[joint_node[parent]].setdefault("children", []).append(joint_node[joint])
    gltf["nodes"] = nodes
    inverse_bind = np.stack([np.linalg.inv(rig[j]) for j in JOINTS]).astype(np.float32)
    gltf["skins"] = [{"name": scheme, "joints": [joint_node[j] for j in JOINTS], "skeleton": joint_node["hips"],
                      "inverseBindMatrices": builder.accessor(inverse_bind, "MAT4", target=None)}]
    gltf["scenes"] = [{"name": "character", "nodes": [0, joint_node["hips"]]}]
    gltf["scene"] = 0
    gltf["asset"]["extras"] = {"pairforge": {"generator": "procedural", "version": 1, "params": p.to_json(),
                                             "scheme": scheme, "rest_pose": rest_pose, "roll_degrees": roll_degrees}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(builder.to_bytes())
    tmp.replace(path)
    return path


def generate_characters(out_dir: str | Path, count: int, seed: int = 0, scheme: str = "canonical",
                        rest_pose: str = "T", roll_degrees: float = 0.0) -> list[Path]:
    """Write ``count`` characters as ``char-NNNN.glb``; character i uses seed (seed, i)."""
    out = Path(out_dir)
    paths = []
    for i in range(count):
        paths.append(write_character_glb(sample_params(character_seed(seed, i)), out / f"char-{i:04d}.glb",
                                         scheme, rest_pose, roll_degrees))
    (out / "characters.json").write_text(json.dumps(
        {"seed": seed, "count": count, "scheme": scheme, "rest_pose": rest_pose, "roll_degrees": roll_degrees,
         "files": [p.name for p in paths]}, indent=1))
    return paths
