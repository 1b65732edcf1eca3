"""The procedural character generator: rigged, textured humanoids with face shape keys, built
in code and written as .glb with a real glTF skin, so tests, CI and the demo need no download.

Every body part is a closed tube or ellipsoid skinned to the canonical skeleton (4 weights per
vertex); clothing, skin and hair come from one texture atlas drawn with numpy. Proportions,
colours, clothing, hair and head shape are drawn from one seed, so two seeds give visibly
different characters."""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from render.bonemap import BONE_NAMES
from render.geometry import matrix_to_quaternion, rotation_about, transform
from render.gltf import ELEMENT_ARRAY_BUFFER, GlbBuilder
from render.skeleton import (
    JOINT_INDEX,
    JOINT_PARENTS,
    JOINTS,
    LANDMARKS,
    PRIMARY_CHILD,
    Proportions,
    face_landmark_offsets,
    head_radii,
    rest_positions,
)

SHAPE_KEYS = ("smile", "mouth_open", "eyes_closed")
HAIR_STYLES = ("bald", "cap", "long", "bun", "ridge")
PATTERNS = ("solid", "stripes", "checks", "dots")
ATLAS = 512
# Texture atlas regions (x0, y0, x1, y1) in pixels.
REGIONS = {
    "shirt": (0, 0, 256, 256), "pants": (256, 0, 512, 256), "skin": (0, 256, 128, 384),
    "shoes": (128, 256, 256, 384), "hair": (256, 256, 384, 384), "iris": (384, 256, 448, 320),
    "mouth": (448, 256, 512, 320), "sclera": (384, 320, 448, 384), "brow": (448, 320, 512, 384),
}
PATTERNED = ("shirt", "pants")


@dataclass(frozen=True)
class CharacterParams:
    """Everything that makes one procedural character; a pure function of its seed."""
    seed: int
    proportions: Proportions
    girth: float
    limb_girth: float
    head_width: float
    head_depth: float
    jaw_taper: float
    skin: tuple
    hair_colour: tuple
    shirt_colour: tuple
    shirt_colour2: tuple
    pants_colour: tuple
    shoes_colour: tuple
    iris_colour: tuple
    shirt_pattern: str
    pants_pattern: str
    sleeves: str   # none | short | long
    trousers: str  # shorts | long
    hair_style: str

    def to_json(self) -> dict:
        return asdict(self)


def sample_params(seed: int) -> CharacterParams:
    rng = np.random.default_rng([seed, 0x5EED])
    colour = lambda lo=0, hi=255: tuple(int(c) for c in rng.integers(lo, hi, 3))  # noqa: E731
    skin_tones = np.array([[255, 224, 196], [241, 194, 153], [224, 172, 105], [198, 134, 66],
                           [141, 85, 36], [92, 58, 32], [255, 205, 180]])
    tone = skin_tones[rng.integers(len(skin_tones))] + rng.integers(-12, 12, 3)
    hair_tones = np.array([[20, 15, 10], [70, 45, 25], [140, 90, 40], [220, 190, 120], [170, 60, 30],
                           [200, 200, 205], [40, 60, 160], [180, 40, 120]])
    proportions = Proportions(
        height=float(1.7 * np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
        heads_tall=float(rng.uniform(5.2, 8.0)),
        leg_fraction=float(rng.uniform(0.43, 0.5)),
        shoulder_width=float(rng.uniform(0.2, 0.26)),
        hip_width=float(rng.uniform(0.15, 0.2)),
        arm_factor=float(rng.uniform(0.9, 1.1)),
        foot_length=float(rng.uniform(0.13, 0.16)),
    )
    return CharacterParams(
        seed=seed, proportions=proportions,
        girth=float(rng.uniform(0.8, 1.35)), limb_girth=float(rng.uniform(0.8, 1.3)),
        head_width=float(rng.uniform(0.85, 1.15)), head_depth=float(rng.uniform(0.9, 1.1)),
        jaw_taper=float(rng.uniform(0.0, 0.35)),
        skin=tuple(int(c) for c in np.clip(tone, 0, 255)),
        hair_colour=tuple(int(c) for c in hair_tones[rng.integers(len(hair_tones))]),
        shirt_colour=colour(), shirt_colour2=colour(), pants_colour=colour(0, 200), shoes_colour=colour(0, 120),
        iris_colour=colour(0, 140),
        shirt_pattern=str(rng.choice(PATTERNS)), pants_pattern=str(rng.choice(PATTERNS[:2])),
        sleeves=str(rng.choice(("none", "short", "long"))), trousers=str(rng.choice(("shorts", "long"), p=(0.3, 0.7))),
        hair_style=str(rng.choice(HAIR_STYLES, p=(0.1, 0.3, 0.25, 0.2, 0.15))),
    )


class _Mesh:
    """Accumulates skinned, UV-mapped parts into one primitive."""

    def __init__(self):
        self.positions, self.uvs, self.joints, self.weights, self.faces = [], [], [], [], []
        self.count = 0

    def add(self, positions, uvs, influences, faces) -> slice:
        """influences: per vertex, a list of (joint name, weight)."""
        start = self.count
        self.positions.append(np.asarray(positions, np.float32))
        self.uvs.append(np.asarray(uvs, np.float32))
        joints = np.zeros((len(positions), 4), np.uint8)
        weights = np.zeros((len(positions), 4), np.float32)
        for i, vertex in enumerate(influences):
            vertex = sorted(((w, j) for j, w in vertex if w > 1e-4), reverse=True)[:4]
            total = sum(w for w, _ in vertex)
            for slot, (w, j) in enumerate(vertex):
                joints[i, slot], weights[i, slot] = JOINT_INDEX[j], w / total
        self.joints.append(joints)
        self.weights.append(weights)
        self.faces.append(np.asarray(faces, np.int64) + start)
        self.count += len(positions)
        return slice(start, self.count)

    def tube(self, start, end, radii, influences, region: str, *, rings: int = 10, segments: int = 16,
             across=None, roundness: float = 4.0) -> slice:
        """A closed tube from ``start`` to ``end``; ``radii(t) -> (a, b)`` are the half-widths along
        ``across`` and the third axis; ``influences(t)`` gives the skin weights along the tube."""
        start, end = np.asarray(start, float), np.asarray(end, float)
        axis = end - start
        length = np.linalg.norm(axis)
        axis /= length
        u = np.asarray(across if across is not None else ((1, 0, 0) if abs(axis[0]) < 0.7 else (0, 0, 1)), float)
        u = u - axis * (u @ axis)
        u /= np.linalg.norm(u)
        v = np.cross(axis, u)
        ts = np.linspace(0, 1, rings + 2)[1:-1]
        theta = np.linspace(0, 2 * np.pi, segments + 1)
        positions, uvs, infl = [], [], []
        for t in ts:
            a, b = radii(t)
            cap = (1 - abs(2 * t - 1) ** roundness) ** (1 / roundness)
            centre = start + axis * length * t
            ring = centre + cap * (a * np.cos(theta)[:, None] * u + b * np.sin(theta)[:, None] * v)
            positions.append(ring)
            uvs.append(np.stack([theta / (2 * np.pi), np.full_like(theta, t)], 1))
            infl += [influences(t)] * len(theta)
        positions.append(np.stack([start, end]))
        uvs.append(np.array([[0.5, 0.0], [0.5, 1.0]]))
        infl += [influences(0.0), influences(1.0)]
        n = segments + 1
        faces = []
        for r in range(rings - 1):
            for s in range(segments):
                a, b, c, d = r * n + s, r * n + s + 1, (r + 1) * n + s, (r + 1) * n + s + 1
                faces += [(a, b, c), (b, d, c)]  # counter-clockwise seen from outside: normals point out
        pole0, pole1 = rings * n, rings * n + 1
        last = (rings - 1) * n
        faces += [(pole0, s + 1, s) for s in range(segments)]
        faces += [(pole1, last + s, last + s + 1) for s in range(segments)]
        uv = _to_region(np.vstack(uvs), region)
        return self.add(np.vstack(positions), uv, infl, faces)

    def ellipsoid(self, centre, radii, joint_weights, region: str, *, rings: int = 8, segments: int = 12) -> slice:
        """An axis-aligned ellipsoid with half-axes ``radii`` (x, y, z), rigid on ``joint_weights``."""
        centre = np.asarray(centre, float)
        rx, ry, rz = radii
        return self.tube(centre - (0, ry, 0), centre + (0, ry, 0), lambda t: (rx, rz), lambda t: joint_weights,
                         region, rings=rings, segments=segments, across=(1, 0, 0), roundness=2.0)

    def arrays(self) -> dict[str, np.ndarray]:
        positions = np.vstack(self.positions).astype(np.float32)
        faces = np.vstack(self.faces)
        return {"positions": positions, "normals": vertex_normals(positions, faces),
                "uvs": np.vstack(self.uvs), "joints": np.vstack(self.joints), "weights": np.vstack(self.weights),
                "faces": faces.astype(np.uint32)}


def vertex_normals(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals, unit length (an arbitrary unit vector where undefined)."""
    tri = positions[faces].astype(np.float64)
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros((len(positions), 3))
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-12, normals / np.maximum(length, 1e-12), (0.0, 1.0, 0.0))
    return normals.astype(np.float32)


def _to_region(uv: np.ndarray, region: str) -> np.ndarray:
    x0, y0, x1, y1 = REGIONS[region]
    if region not in PATTERNED:  # solid colour: every vertex samples the region's centre
        return np.tile([(x0 + x1) / 2 / ATLAS, (y0 + y1) / 2 / ATLAS], (len(uv), 1))
    inset = 2
    return np.stack([(x0 + inset + uv[:, 0] * (x1 - x0 - 2 * inset)) / ATLAS,
                     (y0 + inset + uv[:, 1] * (y1 - y0 - 2 * inset)) / ATLAS], 1)


def _blend(prev: str | None, own: str, nxt: str | None, zone: float = 0.15):
    """Skin weights along a segment: half-and-half with the neighbour at each end."""
    def weights(t: float):
        w_prev = max(0.0, 0.5 - t / (2 * zone)) if prev else 0.0
        w_next = max(0.0, 0.5 - (1 - t) / (2 * zone)) if nxt else 0.0
        return [(own, 1 - w_prev - w_next)] + ([(prev, w_prev)] if prev else []) + ([(nxt, w_next)] if nxt else [])
    return weights


def _draw_atlas(p: CharacterParams, rng: np.random.Generator) -> np.ndarray:
    atlas = np.full((ATLAS, ATLAS, 3), 128, np.uint8)
    solid = {"skin": p.skin, "shoes": p.shoes_colour, "hair": p.hair_colour, "iris": p.iris_colour,
             "mouth": (150, 40, 50), "sclera": (245, 245, 240), "brow": tuple(int(c * 0.7) for c in p.hair_colour)}
    for region, rgb in solid.items():
        x0, y0, x1, y1 = REGIONS[region]
        atlas[y0:y1, x0:x1] = rgb
    for region, pattern, c1, c2 in (("shirt", p.shirt_pattern, p.shirt_colour, p.shirt_colour2),
                                    ("pants", p.pants_pattern, p.pants_colour,
                                     tuple(int(c * 0.6) for c in p.pants_colour))):
        x0, y0, x1, y1 = REGIONS[region]
        yy, xx = np.mgrid[0:y1 - y0, 0:x1 - x0]
        period = int(rng.integers(12, 32))
        if pattern == "stripes":
            mask = (yy // period) % 2 == 0
        elif pattern == "checks":
            mask = ((yy // period) + (xx // period)) % 2 == 0
        elif pattern == "dots":
            mask = ((yy % period - period / 2) ** 2 + (xx % period - period / 2) ** 2) < (period / 4) ** 2
        else:
            mask = np.zeros_like(yy, bool)
        tile = np.where(mask[..., None], np.array(c2, np.uint8), np.array(c1, np.uint8))
        noise = rng.integers(-6, 7, tile.shape[:2])[..., None]  # a little fabric grain
        atlas[y0:y1, x0:x1] = np.clip(tile.astype(int) + noise, 0, 255)
    return atlas


def build_character(p: CharacterParams) -> dict:
    """Mesh arrays, skin, shape keys, texture and landmarks of one procedural character."""
    rng = np.random.default_rng([p.seed, 0xA71A5])
    pr = p.proportions
    h, hh = pr.height, pr.head_height
    rest = rest_positions(pr)
    mesh = _Mesh()
    g, lg = p.girth, p.limb_girth
    hip_y, neck_y = rest["hips"][1], rest["neck"][1]
    torso = neck_y - hip_y
    hip_r, chest_r = pr.hip_width * h / 2 * g, pr.shoulder_width * h / 2 * 0.82 * (0.5 + 0.5 * g)

    def torso_weights(y: float):
        stops = [("hips", hip_y), ("spine", rest["spine"][1]), ("chest", rest["chest"][1]), ("neck", neck_y)]
        if y <= stops[0][1]:
            return [("hips", 1.0)]
        for (j0, y0), (j1, y1) in zip(stops, stops[1:]):
            if y <= y1:
                f = (y - y0) / (y1 - y0)
                return [(j0, 1 - f), (j1, f)]
        return [("neck", 1.0)]

    def along_y(y0: float, y1: float):
        return lambda t: torso_weights(y0 + t * (y1 - y0))

    pelvis = (hip_y - 0.075 * h, hip_y + 0.2 * torso)
    mesh.tube((0, pelvis[0], 0), (0, pelvis[1], 0), lambda t: (hip_r * 1.05, hip_r * 0.75), along_y(*pelvis),
              "pants", rings=8, segments=24, roundness=3.0)
    chest = (hip_y + 0.08 * torso, neck_y + 0.045 * h)
    mesh.tube((0, chest[0], 0), (0, chest[1], 0),
              lambda t: (hip_r + (chest_r - hip_r) * min(1.0, t * 1.4), (hip_r + (chest_r - hip_r) * t) * 0.62),
              along_y(*chest), "shirt", rings=14, segments=24, roundness=5.0)
    neck_r = 0.17 * hh * (0.6 + 0.4 * g)
    neck_back = np.array([0, 0, -0.08 * hh])  # necks sit behind the chin
    mesh.tube(rest["neck"] - (0, 0.02 * h, 0) + neck_back, rest["head"] + (0, 0.25 * hh, 0) + neck_back,
              lambda t: (neck_r, neck_r * 0.95),
              lambda t: [("neck", 1 - t), ("head", t)] if t < 0.8 else [("head", 1.0)], "skin", rings=6)

    # Head, face and hair all ride on the head joint.
    radii = head_radii(hh, p.head_width, p.head_depth)
    centre = rest["head"] + np.array([0, 0.4 * hh, 0.02 * hh])
    mesh.tube(centre - (0, radii[1], 0), centre + (0, radii[1], 0), lambda t: (radii[0], radii[2]),
              lambda t: [("head", 1.0)], "skin", rings=18, segments=28, roundness=2.0)
    below = np.clip(-(mesh.positions[-1][:, 1] - centre[1]) / radii[1], 0, 1)
    mesh.positions[-1][:, 0] = centre[0] + (mesh.positions[-1][:, 0] - centre[0]) * (1 - p.jaw_taper * below ** 1.5)
    marks = {k: centre + v for k, v in face_landmark_offsets(hh, p.head_width, p.head_depth).items()}
    on_head = [("head", 1.0)]
    eye_r = 0.16 * radii[0]
    parts: dict[str, list[slice]] = {"eyes": [], "mouth": []}
    for side in ("left", "right"):
        eye = marks[f"{side}_eye"]
        parts["eyes"].append(mesh.ellipsoid(eye - (0, 0, 0.25 * eye_r), (eye_r, eye_r * 0.8, eye_r * 0.6), on_head,
                                            "sclera"))
        parts["eyes"].append(mesh.ellipsoid(eye + (0, 0, 0.22 * eye_r), (eye_r * 0.55, eye_r * 0.55, eye_r * 0.3),
                                            on_head, "iris"))
        brow = eye + (0, 1.5 * eye_r, -0.1 * eye_r)
        mesh.ellipsoid(brow, (eye_r * 1.2, eye_r * 0.25, eye_r * 0.35), on_head, "brow")
        mesh.ellipsoid(marks[f"{side}_ear"], (0.1 * radii[0], 0.2 * radii[1], 0.14 * radii[2]), on_head, "skin")
    nose = marks["nose"]
    mesh.ellipsoid(nose - (0, 0, 0.08 * radii[2]), (0.09 * radii[0], 0.14 * radii[1], 0.12 * radii[2]), on_head, "skin")
    mouth_centre = centre + np.array([0, -0.5 * radii[1], 0.0])
    # On the head ellipsoid half-way down, pulled in a little where the jaw tapers.
    mouth_centre[2] = centre[2] + radii[2] * (np.sqrt(0.75) * (1 - 0.12 * p.jaw_taper) - 0.01)
    mouth_w = 0.32 * radii[0]
    parts["mouth"].append(mesh.ellipsoid(mouth_centre, (mouth_w, 0.06 * radii[1], 0.08 * radii[2]), on_head,
                                         "mouth", rings=6, segments=16))
    _add_hair(mesh, p.hair_style, centre, radii, on_head)

    # Arms (along +-x in the rest T-pose) and legs.
    for side, sign in (("left", 1.0), ("right", -1.0)):
        sleeve_upper = "shirt" if p.sleeves != "none" else "skin"
        sleeve_lower = "shirt" if p.sleeves == "long" else "skin"
        ua, la, hand = rest[f"{side}_upper_arm"], rest[f"{side}_lower_arm"], rest[f"{side}_hand"]
        arm_r = 0.034 * h * lg
        mesh.tube(ua - (sign * 0.03 * h, 0, 0), la, lambda t: (arm_r * (1 - 0.2 * t), arm_r * (1 - 0.2 * t)),
                  _blend(f"{side}_shoulder", f"{side}_upper_arm", f"{side}_lower_arm"), sleeve_upper,
                  across=(0, 0, 1))
        mesh.tube(la - (sign * 0.01 * h, 0, 0), hand, lambda t: (arm_r * (0.8 - 0.2 * t), arm_r * (0.8 - 0.2 * t)),
                  _blend(f"{side}_upper_arm", f"{side}_lower_arm", f"{side}_hand"), sleeve_lower, across=(0, 0, 1))
        hand_len = 0.1 * h * pr.arm_factor
        mesh.ellipsoid(hand + (sign * hand_len * 0.45, 0, 0), (hand_len / 2, 0.014 * h * lg, 0.035 * h * lg),
                       [(f"{side}_hand", 1.0)], "skin")
        ul, ll, ft, toes = (rest[f"{side}_{j}"] for j in ("upper_leg", "lower_leg", "foot", "toes"))
        thigh_r = 0.06 * h * (0.5 + 0.5 * g) * lg
        pants_lower = "pants" if p.trousers == "long" else "skin"
        mesh.tube(ul + (0, 0.05 * h, 0), ll, lambda t: (thigh_r * (1 - 0.3 * t), thigh_r * (1 - 0.3 * t)),
                  _blend("hips", f"{side}_upper_leg", f"{side}_lower_leg"), "pants")
        mesh.tube(ll + (0, 0.02 * h, 0), ft, lambda t: (thigh_r * (0.7 - 0.2 * t), thigh_r * (0.7 - 0.2 * t)),
                  _blend(f"{side}_upper_leg", f"{side}_lower_leg", f"{side}_foot"), pants_lower)
        foot_len = pr.foot_length * h
        heel, tip = ft + (0, -0.02 * h, -0.25 * foot_len), np.array([ft[0], 0.015 * h, 0.78 * foot_len])
        mesh.tube(heel, tip, lambda t: (0.038 * h * lg, 0.028 * h), 
                  lambda t: [(f"{side}_foot", 1.0)] if t < 0.6 else [(f"{side}_foot", 0.5), (f"{side}_toes", 0.5)],
                  "shoes", rings=8, segments=14, across=(1, 0, 0), roundness=2.5)

    arrays = mesh.arrays()
    arrays["morphs"] = _shape_keys(arrays["positions"], parts, marks, mouth_centre, mouth_w, eye_r)
    arrays["atlas"] = _draw_atlas(p, rng)
    arrays["rest"] = rest
    arrays["landmarks"] = {name: marks[name] for name in LANDMARKS}
    return arrays


def _add_hair(mesh: _Mesh, style: str, centre, radii, weights) -> None:
    rx, ry, rz = radii
    if style == "bald":
        return
    mesh.ellipsoid(centre + (0, 0.13 * ry, -0.2 * rz), (1.07 * rx, 0.93 * ry, 0.98 * rz), weights, "hair",
                   rings=12, segments=20)
    if style == "long":
        mesh.ellipsoid(centre + (0, -0.45 * ry, -0.6 * rz), (0.95 * rx, 1.0 * ry, 0.45 * rz), weights, "hair")
    elif style == "bun":
        mesh.ellipsoid(centre + (0, 0.85 * ry, -0.35 * rz), (0.45 * rx, 0.35 * ry, 0.45 * rz), weights, "hair")
    elif style == "ridge":
        mesh.ellipsoid(centre + (0, 0.95 * ry, -0.1 * rz), (0.2 * rx, 0.3 * ry, 0.95 * rz), weights, "hair")


def _shape_keys(positions, parts, marks, mouth_centre, mouth_w, eye_r) -> dict[str, np.ndarray]:
    morphs = {name: np.zeros_like(positions) for name in SHAPE_KEYS}
    for part in parts["mouth"]:
        p = positions[part]
        x = (p[:, 0] - mouth_centre[0]) / mouth_w
        morphs["smile"][part, 1] = 0.9 * mouth_w * x ** 2 * 0.5
        morphs["smile"][part, 0] = 0.15 * mouth_w * x
        morphs["mouth_open"][part, 1] = (p[:, 1] - mouth_centre[1]) * 3.0 - 0.35 * mouth_w
        morphs["mouth_open"][part, 2] = -0.01 * mouth_w
    for part in parts["eyes"]:
        p = positions[part]
        eye_centre = marks["left_eye"] if p[:, 0].mean() > mouth_centre[0] else marks["right_eye"]
        morphs["eyes_closed"][part, 1] = -(p[:, 1] - eye_centre[1]) * 0.9
        morphs["eyes_closed"][part, 2] = -0.25 * eye_r
    return {k: v.astype(np.float32) for k, v in morphs.items()}


def _rest_rig(arrays: dict, rest_pose: str, roll_degrees: float, seed: int) -> dict[str, np.ndarray]:
    """World matrices of the joints at rest. "T" keeps the built T-pose; "A" bakes the A-pose into
    the mesh, normals and shape keys (as A-pose rigs ship). ``roll_degrees`` turns each joint's
    frame about its bone by a random angle up to that, as real rigs' bone rolls do: the frames
    change, the mesh does not."""
    from render.poses import A_POSE, joint_rotations, posed_positions
    rest = arrays["rest"]
    pose = A_POSE if rest_pose == "A" else {}
    if rest_pose not in ("A", "T"):
        raise ValueError(f"rest pose {rest_pose!r}: use 'T' or 'A'")
    rotations, positions = joint_rotations(pose), posed_positions(pose, rest)
    globals_ = {j: transform(rotations[j], positions[j]) for j in JOINTS}
    if pose:
        skin = np.stack([globals_[j] @ transform(translation=-rest[j]) for j in JOINTS])
        blended = np.einsum("nk,nkij->nij", arrays["weights"], skin[arrays["joints"]])
        rotate = lambda v: np.einsum("nij,nj->ni", blended[:, :3, :3], v).astype(np.float32)  # noqa: E731
        arrays["positions"] = (rotate(arrays["positions"]) + blended[:, :3, 3]).astype(np.float32)
        arrays["normals"] = vertex_normals(arrays["positions"], arrays["faces"].astype(np.int64))
        arrays["morphs"] = {k: rotate(v) for k, v in arrays["morphs"].items()}
        arrays["landmarks"] = {k: positions[k] for k in arrays["landmarks"]}
    rng = np.random.default_rng([seed, 0x2011])
    for joint, child in PRIMARY_CHILD.items():
        if roll_degrees:
            axis = positions[child] - positions[joint]
            roll = rotation_about(axis, float(rng.uniform(-roll_degrees, roll_degrees)))
            globals_[joint][:3, :3] = roll @ globals_[joint][:3, :3]
    return globals_


def write_character_glb(p: CharacterParams, path: str | Path, scheme: str = "canonical", rest_pose: str = "T",
                        roll_degrees: float = 0.0) -> Path:
    """Build the character of ``p`` and write it as a skinned, textured .glb with shape keys, its
    bones named after ``scheme`` (canonical, mixamo, vroid, rigify, unreal, smpl), at rest in the
    ``rest_pose`` ("T" or "A") with random bone rolls up to ``roll_degrees``."""
    arrays = build_character(p)
    names = BONE_NAMES[scheme]
    rig = _rest_rig(arrays, rest_pose, roll_degrees, p.seed)
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


def character_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
