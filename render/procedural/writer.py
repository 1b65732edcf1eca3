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
    parent_index = {j: i for i, j in enumerate(JOINTS)}
    bones = [(names[j], parent_index[JOINT_PARENTS[j]] if JOINT_PARENTS[j] else None, rig[j]) for j in JOINTS]
    extras = {"generator": "procedural", "version": 1, "params": p.to_json(), "scheme": scheme,
              "rest_pose": rest_pose, "roll_degrees": roll_degrees}
    return write_skinned_glb(path, arrays, bones, scheme, SHAPE_KEYS, JOINTS.index("head"), extras)


def write_skinned_glb(path: str | Path, arrays: dict, bones: list[tuple[str, int | None, np.ndarray]],
                      skin_name: str, shape_keys: tuple[str, ...], head_bone: int, extras: dict) -> Path:
    """Write one skinned, textured mesh with shape keys as a .glb (atomically): ``arrays`` holds
    positions, normals, uvs, joints (indices into ``bones``), weights, faces, morphs (by shape key),
    atlas (the texture) and landmarks (world points, written as ``kp_`` nodes under the head bone);
    ``bones`` are (name, parent index or None, world matrix at rest), parents first; ``extras`` go
    to the asset's ``extras.pairforge``."""
    builder = GlbBuilder()
    gltf = builder.gltf
    attributes = {
        "POSITION": builder.accessor(arrays["positions"], "VEC3", with_bounds=True),
        "NORMAL": builder.accessor(arrays["normals"], "VEC3"),
        "TEXCOORD_0": builder.accessor(arrays["uvs"], "VEC2"),
        "JOINTS_0": builder.accessor(arrays["joints"], "VEC4"),
        "WEIGHTS_0": builder.accessor(arrays["weights"], "VEC4"),
    }
    targets = [{"POSITION": builder.accessor(arrays["morphs"][k], "VEC3", with_bounds=True)} for k in shape_keys]
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
                       "weights": [0.0] * len(shape_keys), "extras": {"targetNames": list(shape_keys)}}]
    # Nodes: 0 is the skinned mesh, then one node per bone, then the head landmarks.
    nodes = [{"name": "body", "mesh": 0, "skin": 0}]
    for name, parent, world in bones:
        local = np.linalg.inv(bones[parent][2]) @ world if parent is not None else world
        node = {"name": name, "translation": [float(x) for x in local[:3, 3]]}
        if not np.allclose(local[:3, :3], np.eye(3), atol=1e-7):
            node["rotation"] = [float(x) for x in matrix_to_quaternion(local[:3, :3])]
        nodes.append(node)
    head_inverse = np.linalg.inv(bones[head_bone][2])
    for name in LANDMARKS:
        local = head_inverse @ np.append(arrays["landmarks"][name], 1.0)
        nodes.append({"name": f"kp_{name}", "translation": [float(x) for x in local[:3]]})
        nodes[1 + head_bone].setdefault("children", []).append(len(nodes) - 1)
    for i, (_, parent, _) in enumerate(bones):
        if parent is not None:
            nodes[1 + parent].setdefault("children", []).append(1 + i)
    gltf["nodes"] = nodes
    roots = [1 + i for i, (_, parent, _) in enumerate(bones) if parent is None]
    inverse_bind = np.stack([np.linalg.inv(world) for _, _, world in bones]).astype(np.float32)
    gltf["skins"] = [{"name": skin_name, "joints": list(range(1, 1 + len(bones))), "skeleton": roots[0],
                      "inverseBindMatrices": builder.accessor(inverse_bind, "MAT4", target=None)}]
    gltf["scenes"] = [{"name": "character", "nodes": [0, *roots]}]
    gltf["scene"] = 0
    gltf["asset"]["extras"] = {"pairforge": extras}
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
