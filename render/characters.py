"""Loading a rigged character (.glb) into numpy arrays mapped onto the canonical skeleton, and
posing it: forward kinematics over the node tree, shape keys, and linear-blend skinning. Rigs
without kp_ landmark nodes get their face landmarks found on the head's own surface.
A character is loaded once and posed many times; nothing here touches a renderer."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from render.bonemap import UnmappableRig, map_bones
from render.expressions import expression_map
from render.geometry import euler_xyz, rotation_between, transform
from render.gltf import Glb, GltfError, node_matrix, parents_first
from render.landmarks import EyeHints, eye_bones, face_points, says_eye, vrm_eye_nodes
from render.poses import Pose, joint_rotations
from render.skeleton import (
    ALIGNED_BONES,
    FOLLOWS,
    JOINT_PARENTS,
    JOINTS,
    BODY_PARTS,
    LANDMARKS,
    OPENPOSE_SOURCES,
    PART_INDEX,
    PART_OF_JOINT,
    face_landmark_offsets,
    rest_positions,
)
from shards.storage import is_remote, read_bytes

HEAD_OUTLINE = ("head_top", "chin", "left_ear", "right_ear")


class CharacterError(ValueError):
    """A character asset that cannot be used; the message is the reject reason."""


@dataclass
class Primitive:
    positions: np.ndarray
    normals: np.ndarray
    uvs: np.ndarray | None
    faces: np.ndarray
    joints: np.ndarray      # (N, 4) indices into Character.skin_nodes
    weights: np.ndarray     # (N, 4)
    morphs: dict[str, np.ndarray]
    texture: np.ndarray | None
    colour: tuple[float, float, float, float]
    head_faces: np.ndarray = None   # (F,) bool: faces whose three vertices the head (and bones under it) moves most
    face_parts: np.ndarray = None   # (F,) uint8: the body part (render.skeleton.BODY_PARTS) moving each face most


@dataclass
class Character:
    id: str
    path: str
    primitives: list[Primitive]
    node_names: list[str]
    parents: np.ndarray            # parent node index, -1 for roots
    local_rest: np.ndarray         # (K, 4, 4)
    skin_nodes: np.ndarray         # (J,) node index of each skin joint
    inverse_bind: np.ndarray       # (J, 4, 4)
    joint_nodes: dict[str, int]    # canonical joint -> node index
    landmark_nodes: dict[str, int]  # landmark -> node index (added for rigs without kp_ nodes)
    meta: dict = field(default_factory=dict)
    global_rest: np.ndarray = field(init=False)
    _stacked: tuple | None = field(init=False, default=None, repr=False)

    def __post_init__(self):
        self.refresh_rest()

    def refresh_rest(self) -> None:
        """Recompute the rest-pose world matrices (after nodes are added or changed) and the
        alignment of each mapped bone's rest direction to the canonical T-pose."""
        self.global_rest = self._rest_globals()
        rotations = self.global_rest[:, :3, :3]
        scale = np.cbrt(np.maximum(np.abs(np.linalg.det(rotations)), 1e-12))
        self._rest_rotations = rotations / scale[:, None, None]  # scale-free rest frames
        canonical = rest_positions()
        position = {joint: self.global_rest[node][:3, 3] for joint, node in self.joint_nodes.items()}
        self._alignment = {joint: np.eye(3) for joint in JOINTS}
        for joint, child in ALIGNED_BONES.items():
            if joint in position and child in position:
                self._alignment[joint] = rotation_between(position[child] - position[joint],
                                                          canonical[child] - canonical[joint])
        for joint, leader in FOLLOWS.items():
            self._alignment[joint] = self._alignment[leader]

    @property
    def shape_keys(self) -> list[str]:
        return sorted({name for p in self.primitives for name in p.morphs})

    @property
    def expressions(self) -> list[str]:
        """The canonical expressions this character's shape keys can show (render.expressions)."""
        return sorted(expression_map(self.shape_keys))

    def node_globals(self, pose: Pose) -> np.ndarray:
        """World matrices of all nodes under ``pose`` (defined on the canonical T-posed skeleton):
        a mapped joint's world rotation becomes pose x rest alignment x its own rest frame, so the
        same pose looks alike on rigs at rest in a T- or an A-pose and with any bone rolls; other
        nodes follow their parents."""
        world = joint_rotations(pose)
        joint_of = {node: joint for joint, node in self.joint_nodes.items()}
        out = np.empty_like(self.local_rest)
        for n in range(len(self.local_rest)):  # nodes are stored parents-first
            g = self.local_rest[n] if self.parents[n] < 0 else out[self.parents[n]] @ self.local_rest[n]
            joint = joint_of.get(n)
            if joint is not None:
                g = g.copy()
                scale = np.cbrt(max(abs(np.linalg.det(g[:3, :3])), 1e-12))
                g[:3, :3] = world[joint] @ self._alignment[joint] @ self._rest_rotations[n] * scale
            out[n] = g
        return out

    def pose_from_world(self, world: np.ndarray) -> Pose:
        """The inverse of node_globals: world matrices of this rig's nodes -> the canonical pose."""
        canonical_world: dict[str, np.ndarray] = {}
        pose: Pose = {}
        for joint in JOINTS:
            parent = JOINT_PARENTS[joint]
            parent_world = canonical_world[parent] if parent else np.eye(3)
            node = self.joint_nodes.get(joint)
            if node is None:
                canonical_world[joint] = parent_world
                continue
            rotation = world[node][:3, :3] / np.cbrt(abs(np.linalg.det(world[node][:3, :3])))
            # posed = W x alignment x rest frame  =>  W = posed x rest^T x alignment^T
            canonical_world[joint] = rotation @ self._rest_rotations[node].T @ self._alignment[joint].T
            angles = euler_xyz(parent_world.T @ canonical_world[joint])
            if np.abs(angles).max() > 1e-4:
                pose[joint] = [round(float(a), 4) for a in angles]
        return pose

    def _rest_globals(self) -> np.ndarray:
        out = np.empty_like(self.local_rest)
        for n in range(len(self.local_rest)):  # nodes are stored parents-first
            out[n] = self.local_rest[n] if self.parents[n] < 0 else out[self.parents[n]] @ self.local_rest[n]
        return out

    def height(self) -> float:
        ys = np.concatenate([p.positions[:, 1] for p in self.primitives])
        return float(ys.max() - ys.min())

    def stacked_faces(self) -> tuple[np.ndarray, np.ndarray]:
        """The faces of all primitives as one (F, 3) int64 array indexing their stacked vertices,
        and each face's body part (F,): computed once."""
        if self._stacked is None:
            offsets = np.cumsum([0] + [len(prim.positions) for prim in self.primitives])
            self._stacked = (np.vstack([prim.faces.astype(np.int64) + offset
                                        for prim, offset in zip(self.primitives, offsets)]),
                             np.concatenate([prim.face_parts for prim in self.primitives]))
        return self._stacked


@dataclass
class PosedCharacter:
    """A character under one pose and expression: skinned vertices and named 3-D points."""
    positions: list[np.ndarray]
    normals: list[np.ndarray]
    points: dict[str, np.ndarray]   # canonical joints and landmarks, world space

    def keypoints_3d(self) -> np.ndarray:
        return np.array([self.points[name] for _, name in OPENPOSE_SOURCES.values()])

    def head_outline(self) -> np.ndarray:
        """Crown, chin and ears: the skull's extent, which hair and hats do not change."""
        return np.array([self.points[name] for name in HEAD_OUTLINE])


def shape_key_weights(char: Character, expression: dict[str, float] | None) -> dict[str, float]:
    """Canonical expression weights -> this character's shape-key weights (render.expressions)."""
    keys = expression_map(char.shape_keys) if expression else {}
    return {key: weight for name, weight in (expression or {}).items() for key in keys.get(name, ())}


def node_skinning(char: Character, pose: Pose) -> dict[str, np.ndarray]:
    """Per node name, the world matrix that carries its rest pose to ``pose``: the skin joint's
    global x inverse bind, or global x inverse rest global for other nodes. A renderer that does
    its own skinning (Blender) poses its bones with these."""
    globals_ = char.node_globals(pose)
    out = {name: g @ np.linalg.inv(rest) for name, g, rest in zip(char.node_names, globals_, char.global_rest)}
    for joint, node in enumerate(char.skin_nodes):
        out[char.node_names[node]] = globals_[node] @ char.inverse_bind[joint]
    return out


def pose_character(char: Character, pose: Pose, expression: dict[str, float] | None = None) -> PosedCharacter:
    """Shape keys (``expression`` by canonical name, see render.expressions), then linear-blend
    skinning of every primitive under ``pose``."""
    globals_ = char.node_globals(pose)
    weights = shape_key_weights(char, expression)
    # The top 3x4 of each skinning matrix, flattened: batched matmuls over these are ~3x faster
    # than einsum over the full 4x4 matrices (in float64, which costs no more here than float32).
    skin = (globals_[char.skin_nodes] @ char.inverse_bind)[:, :3, :].reshape(-1, 12)
    positions, normals = [], []
    for prim in char.primitives:
        base = prim.positions
        for name, weight in weights.items():
            if weight and name in prim.morphs:
                base = base + np.float32(weight) * prim.morphs[name]
        blended = np.matmul(prim.weights[:, None, :], skin[prim.joints]).reshape(-1, 3, 4)
        pos = np.matmul(blended[:, :, :3], base[:, :, None])[:, :, 0] + blended[:, :, 3]
        nrm = np.matmul(blended[:, :, :3], prim.normals[:, :, None])[:, :, 0]
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
        positions.append(pos.astype(np.float32))
        normals.append(nrm.astype(np.float32))
    points = {joint: globals_[node][:3, 3] for joint, node in char.joint_nodes.items()}
    points.update({name: globals_[node][:3, 3] for name, node in char.landmark_nodes.items()})
    return PosedCharacter(positions, normals, points)


def _texture(glb: Glb, material: dict) -> np.ndarray | None:
    info = material.get("pbrMetallicRoughness", {}).get("baseColorTexture")
    if info is None:
        return None
    try:
        source = glb.gltf["textures"][info["index"]]["source"]
        image = glb.gltf["images"][source]
        with Image.open(io.BytesIO(glb.buffer_view(image["bufferView"]))) as img:
            return np.asarray(img.convert("RGBA"))
    except (KeyError, IndexError, OSError) as error:
        raise CharacterError(f"{glb.name}: unreadable base colour texture ({error!r})") from None


def load_character(path: str | Path) -> Character:
    """Read a skinned .glb and map it to the canonical skeleton; CharacterError says why not."""
    url, path = str(path), Path(path)
    try:
        glb = Glb(read_bytes(url), path.name) if is_remote(url) else Glb.load(path)  # a URL: s3://, gs://
        return _build(glb, path)
    except CharacterError:
        raise
    except (GltfError, UnmappableRig) as error:
        raise CharacterError(str(error)) from None
    except OSError as error:
        raise CharacterError(f"{path.name}: cannot read ({error.strerror or error})") from None
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise CharacterError(f"{path.name}: malformed glTF ({type(error).__name__}: {error})") from None


def _build(glb: Glb, path: Path) -> Character:
    gltf = glb.gltf
    nodes = gltf.get("nodes", [])
    skinned = [i for i, n in enumerate(nodes) if "mesh" in n and "skin" in n]
    if not gltf.get("skins") or not skinned:
        raise CharacterError(f"{path.name}: no skinned mesh (a character needs a glTF skin)")
    skin_index = nodes[skinned[0]]["skin"]
    skin = gltf["skins"][skin_index]
    order, parents = parents_first(nodes, path.name)
    new_index = {old: new for new, old in enumerate(order)}
    names = [nodes[i].get("name", f"node{i}") for i in order]
    local_rest = np.stack([node_matrix(nodes[i]) for i in order])
    skin_nodes = np.array([new_index[j] for j in skin["joints"]])
    if "inverseBindMatrices" in skin:
        inverse_bind = glb.read(skin["inverseBindMatrices"]).astype(float)
    else:
        inverse_bind = np.tile(np.eye(4), (len(skin_nodes), 1, 1))
    mapping = map_bones([names[n] for n in skin_nodes])
    by_name = {name: i for i, name in enumerate(names)}
    joint_nodes = {joint: by_name[bone] for joint, bone in mapping.items()}
    landmark_nodes = {lm: by_name[f"kp_{lm}"] for lm in LANDMARKS if f"kp_{lm}" in by_name}

    primitives, eye_meshes = [], []
    for node in skinned:
        if nodes[node]["skin"] != skin_index:
            continue
        mesh = gltf["meshes"][nodes[node]["mesh"]]
        target_names = mesh.get("extras", {}).get("targetNames", [])
        for prim in mesh["primitives"]:
            attributes = prim["attributes"]
            if "JOINTS_0" not in attributes or "WEIGHTS_0" not in attributes:
                raise CharacterError(f"{path.name}: a skinned primitive lacks JOINTS_0/WEIGHTS_0")
            positions = glb.read(attributes["POSITION"]).astype(np.float32)
            faces = (glb.read(prim["indices"]) if "indices" in prim else np.arange(len(positions))).reshape(-1, 3)
            if faces.size and faces.max() >= len(positions):
                raise CharacterError(f"{path.name}: triangle indices run past the vertices")
            joints = glb.read(attributes["JOINTS_0"]).astype(np.int64)
            if joints.max(initial=0) >= len(skin_nodes):
                raise CharacterError(f"{path.name}: JOINTS_0 names a joint the skin does not have")
            weights = glb.read(attributes["WEIGHTS_0"]).astype(np.float32)
            weights /= np.maximum(weights.sum(1, keepdims=True), 1e-8)
            if "NORMAL" in attributes:
                normals = glb.read(attributes["NORMAL"]).astype(np.float32)
            else:
                from render.procedural import vertex_normals
                normals = vertex_normals(positions, faces)
            morphs = {}
            for k, target in enumerate(prim.get("targets", [])):
                if "POSITION" in target:
                    morphs[target_names[k] if k < len(target_names) else f"target{k}"] = \
                        glb.read(target["POSITION"]).astype(np.float32)
            material = gltf["materials"][prim["material"]] if "material" in prim else {}
            colour = tuple(material.get("pbrMetallicRoughness", {}).get("baseColorFactor", (1, 1, 1, 1)))
            uvs = glb.read(attributes["TEXCOORD_0"]).astype(np.float32) if "TEXCOORD_0" in attributes else None
            primitives.append(Primitive(positions, normals, uvs, faces.astype(np.uint32), joints, weights, morphs,
                                        _texture(glb, material), colour))
            if says_eye(material.get("name", ""), mesh.get("name", ""), nodes[node].get("name", "")):
                eye_meshes.append(positions[np.unique(faces)])
    if not primitives:
        raise CharacterError(f"{path.name}: the skinned mesh has no primitives")
    part_of_skin_joint = _skin_joint_parts(parents, skin_nodes, joint_nodes)
    for prim in primitives:
        prim.face_parts, vertex_parts = _body_parts(prim, part_of_skin_joint)
        prim.head_faces = (vertex_parts[prim.faces] == PART_INDEX["head"]).all(axis=1)
    char = Character(path.stem, str(path), primitives, names, parents, local_rest, skin_nodes, inverse_bind,
                     joint_nodes, landmark_nodes, meta=gltf.get("asset", {}).get("extras", {}).get("pairforge", {}))
    if len(char.landmark_nodes) < len(LANDMARKS):
        bones = eye_bones(char, [new_index[n] for n in vrm_eye_nodes(gltf)])
        _estimate_landmarks(char, EyeHints(bones, eye_meshes))
    return char


def _skin_joint_parts(parents: np.ndarray, skin_nodes: np.ndarray, joint_nodes: dict[str, int]) -> np.ndarray:
    """Per skin joint, the body part of the nearest mapped joint at or above it (hair and eye
    bones belong to the head, twist bones to their limb); the torso for bones above the hips."""
    joint_of = {node: joint for joint, node in joint_nodes.items()}
    out = np.full(len(skin_nodes), PART_INDEX["torso"], np.int64)
    for k, node in enumerate(skin_nodes):
        while node >= 0 and node not in joint_of:
            node = parents[node]
        if node >= 0:
            out[k] = PART_INDEX[PART_OF_JOINT[joint_of[node]]]
    return out


def _body_parts(prim: Primitive, part_of_skin_joint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per face, per vertex) the body part with the most skin weight: smooth weights (automatic
    weights, Mixamo's auto-rigger) put a vertex in the part that dominates it, not only rigid ones."""
    share = np.zeros((len(prim.weights), len(BODY_PARTS)))
    np.add.at(share, (np.arange(len(prim.weights))[:, None], part_of_skin_joint[prim.joints]), prim.weights)
    return share[prim.faces].sum(axis=1).argmax(axis=1).astype(np.uint8), share.argmax(axis=1)


def _estimate_landmarks(char: Character, hints: EyeHints | None = None) -> None:
    """Rigs without ``kp_*`` nodes: crown and chin from the box of the vertices the head dominates (as the standardized framing expects), nose, eyes and ears on the head's own surface
    (``face_points``); all ride on the head bone."""
    head = np.vstack([p.positions[np.unique(p.faces[p.head_faces])] for p in char.primitives])
    if len(head) < 10:
        raise CharacterError(f"{Path(char.path).name}: too few vertices follow the head bone to place the face")
    lo, hi = head.min(0), head.max(0)
    centre, size = (lo + hi) / 2, hi - lo
    offsets = face_landmark_offsets(size[1], size[0] / (0.8 * size[1]), size[2] / (0.9 * size[1]))
    points = {name: centre + offsets[name] for name in ("head_top", "chin")}
    if any(name not in char.landmark_nodes for name in LANDMARKS if name not in points):
        points.update(face_points(char, hints or EyeHints()))
    head_node = char.joint_nodes["head"]
    head_global_inv = np.linalg.inv(char.global_rest[head_node])
    names, parents, local = list(char.node_names), list(char.parents), list(char.local_rest)
    for name in LANDMARKS:
        if name in char.landmark_nodes:
            continue
        world = np.append(points[name], 1.0)
        names.append(f"kp_{name}")
        parents.append(head_node)
        local.append(transform(translation=(head_global_inv @ world)[:3]))
        char.landmark_nodes[name] = len(names) - 1
    char.node_names, char.parents, char.local_rest = names, np.array(parents), np.stack(local)
    char.refresh_rest()
