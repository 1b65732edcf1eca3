"""glTF animation clips: reading them from rigged characters, skeleton-only files and VRM Animation
(.vrma, whose humanBones table and expression tracks are understood), and writing a motion as a
clip onto a character's own rig (add_gltf_animation)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from render.bonemap import UnmappableRig, map_bones
from render.motions.base import Motion, MotionError, skeleton_character


def _check_required(name: str, joint_nodes: dict[str, int], where: str) -> None:
    from render.skeleton import REQUIRED_JOINTS
    missing = [j for j in REQUIRED_JOINTS if j not in joint_nodes]
    if missing:
        raise MotionError(f"{name}: not a humanoid skeleton ({where} lacks {', '.join(missing)})")


# VRM 1.0 humanoid bone names (VRMC_vrm and VRMC_vrm_animation) -> canonical joints; the others
# (upperChest, fingers, eyes, jaw) are left out and ride along between the mapped ones.
VRM_HUMAN_BONES = {"hips": "hips", "spine": "spine", "chest": "chest", "neck": "neck", "head": "head",
                   **{f"{side}{part}": f"{side}_{joint}" for side in ("left", "right") for part, joint in (
                       ("Shoulder", "shoulder"), ("UpperArm", "upper_arm"), ("LowerArm", "lower_arm"), ("Hand", "hand"),
                       ("UpperLeg", "upper_leg"), ("LowerLeg", "lower_leg"), ("Foot", "foot"), ("Toes", "toes"))}}
# VRM expression presets -> canonical expressions (render.expressions); several presets average.
VRM_EXPRESSIONS = {"happy": ("smile",), "aa": ("mouth_open",), "blink": ("eyes_closed",),
                   "blinkLeft": ("eyes_closed",), "blinkRight": ("eyes_closed",)}


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
    from render.gltf import Glb, GltfError, node_matrix, parents_first

    path = Path(path)
    try:
        glb = Glb(path.read_bytes(), path.name)  # .vrma is binary glTF too, whatever its suffix
        gltf = glb.gltf
        nodes = gltf.get("nodes", [])
        order, parents = parents_first(nodes, path.name)
        position = {old: new for new, old in enumerate(order)}
        names = [nodes[i].get("name", f"node{i}") for i in order]
        local_rest = np.stack([node_matrix(nodes[i]) for i in order]) if order else np.zeros((0, 4, 4))
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
        skeleton = skeleton_character(path.stem, names, parents, local_rest, joint_nodes)
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
