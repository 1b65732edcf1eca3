"""The human's one texture, painted on MakeHuman's UV layout: each body triangle gets a region
(skin, hair, top, bottom, shoes) from the body part that moves it and where it lies along that
part's bone, then skin tone, clothing colours and patterns fill the regions. A strip along the
bottom holds solid swatches for the eyes and the skirt helper; hair is painted on the scalp."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from render.bonemap import map_bones
from render.human.assets import base_mesh, rig
from render.human.params import HumanParams
from render.skeleton import PRIMARY_CHILD

SIZE = 512
BODY_V = 0.875  # the body's UVs fill the top 7/8 of the texture; the swatches sit below
SWATCH_UV = {"sclera": (0.0625, 0.9375), "iris": (0.1875, 0.9375), "bottom": (0.3125, 0.9375)}
REGIONS = ("skin", "hair", "top", "bottom", "shoes", "lips")


@lru_cache(maxsize=1)
def _vertex_joints() -> tuple[np.ndarray, dict[str, int]]:
    """Per base-mesh vertex, the canonical joint (render.skeleton) of the Mixamo bone that moves it
    most, walking up to the nearest mapped bone; and the Mixamo rig's bone index of each joint."""
    mixamo = rig("mixamo")
    bone_of_joint = {joint: mixamo.bones.index(bone) for joint, bone in map_bones(mixamo.bones).items()}
    joint_of_bone = {i: joint for joint, i in bone_of_joint.items()}
    canonical = []
    for bone in range(len(mixamo.bones)):
        b = bone
        while b is not None and b not in joint_of_bone:
            b = mixamo.parents[b]
        canonical.append(joint_of_bone.get(b, "hips"))
    names = np.array(canonical)[mixamo.joints[:, 0]]
    return names, bone_of_joint


def _regions(p: HumanParams, vertices: np.ndarray, marks: dict) -> np.ndarray:
    """Per vertex, an index into REGIONS."""
    joints, bone_of_joint = _vertex_joints()
    mixamo = rig("mixamo")
    at = {joint: vertices[mixamo.heads[i]].mean(0) for joint, i in bone_of_joint.items()}

    def along(joint: str) -> np.ndarray:
        """Where each vertex lies along ``joint``'s bone: 0 at the joint, 1 at its child."""
        a, b = at[joint], at[PRIMARY_CHILD[joint]]
        return (vertices - a) @ (b - a) / max(float((b - a) @ (b - a)), 1e-12)

    region = np.zeros(len(vertices), np.int64)
    code = {name: i for i, name in enumerate(REGIONS)}
    y = vertices[:, 1]
    sleeves = {"tank": (0.0, 0.0), "tshirt": (0.45, 0.0), "longsleeve": (1.0, 0.92)}[p.top]
    for side in ("left", "right"):
        upper, lower = joints == f"{side}_upper_arm", joints == f"{side}_lower_arm"
        region[upper & (along(f"{side}_upper_arm") < sleeves[0])] = code["top"]
        region[(upper & (sleeves[0] >= 1.0)) | (lower & (along(f"{side}_lower_arm") < sleeves[1]))] = code["top"]
        thigh, shin = joints == f"{side}_upper_leg", joints == f"{side}_lower_leg"
        legs = {"trousers": (1.0, 0.9), "shorts": (0.5, -1.0), "skirt": (0.0, -1.0)}[p.bottom]
        region[thigh & (along(f"{side}_upper_leg") < legs[0])] = code["bottom"]
        region[thigh & (legs[0] >= 1.0)] = code["bottom"]
        region[shin & (along(f"{side}_lower_leg") < legs[1])] = code["bottom"]
        region[shin & (along(f"{side}_lower_leg") > 0.88)] = code["shoes"]
        region[np.isin(joints, (f"{side}_foot", f"{side}_toes"))] = code["shoes"]
    torso = np.isin(joints, ("hips", "spine", "chest", "left_shoulder", "right_shoulder"))
    waist = at["hips"][1] + 0.45 * (at["spine"][1] - at["hips"][1])
    neckline = at["neck"][1] - (0.35 if p.top == "tank" else 0.15) * (at["neck"][1] - at["chest"][1])
    region[torso & (y >= waist) & (y < neckline)] = code["top"]
    region[torso & (y < waist)] = code["bottom"] if p.bottom != "skirt" else code["top"]
    head = np.isin(joints, ("head", "neck"))
    eye_y = (marks["left_eye"][1] + marks["right_eye"][1]) / 2
    brow = eye_y + 0.3 * (marks["head_top"][1] - eye_y)
    ear_z = (marks["left_ear"][2] + marks["right_ear"][2]) / 2
    if p.hair_style != "bald":
        front = vertices[:, 2] - ear_z
        hairline = brow + np.clip(front, 0, None) * 0.25  # the hairline rises towards the forehead
        region[head & (y > hairline)] = code["hair"]
        if p.hair_style == "long":
            region[head & (front < -0.01) & (y > marks["chin"][1] - 0.02)] = code["hair"]
    mouth_y = marks["nose"][1] - 0.45 * (marks["nose"][1] - marks["chin"][1])
    lips = head & (np.abs(y - mouth_y) < 0.08 * (marks["nose"][1] - marks["chin"][1])) & \
        (np.abs(vertices[:, 0]) < 0.16 * abs(marks["left_ear"][0] - marks["right_ear"][0])) & \
        (vertices[:, 2] > marks["nose"][2] - 0.35 * (marks["nose"][2] - ear_z))
    region[lips] = code["lips"]
    return region


def _pattern(kind: str, c1, c2, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    period = int(rng.integers(10, 24))
    mask = {"stripes": (yy // period) % 2 == 0, "checks": ((yy // period) + (xx // period)) % 2 == 0}.get(
        kind, np.zeros((SIZE, SIZE), bool))
    tile = np.where(mask[..., None], np.array(c2, np.int64), np.array(c1, np.int64))
    return np.clip(tile + rng.integers(-6, 7, (SIZE, SIZE))[..., None], 0, 255)


def paint(p: HumanParams, vertices: np.ndarray, tris: np.ndarray, tri_uvs: np.ndarray, marks: dict) -> np.ndarray:
    """The (SIZE, SIZE, 3) texture: body triangles ``tris`` (mesh vertex ids) with their OBJ uv ids
    ``tri_uvs`` rasterized by region, seams bled outwards, swatches below."""
    rng = np.random.default_rng([p.seed, 0x7E47])
    region = _regions(p, vertices, marks)
    # A triangle takes the region most of its corners have (the first corner's on a three-way tie).
    corner = region[tris]
    tri_region = np.where(corner[:, 1] == corner[:, 2], corner[:, 1], corner[:, 0])
    uv = base_mesh().uvs[tri_uvs]
    px = np.stack([uv[..., 0] * SIZE, (1 - uv[..., 1]) * BODY_V * SIZE], -1)
    labels = Image.new("L", (SIZE, SIZE), 255)
    draw = ImageDraw.Draw(labels)
    for triangle, r in zip(px, tri_region):
        draw.polygon([tuple(c) for c in triangle], fill=int(r))
    for _ in range(4):  # bleed each region a few pixels past the islands' edges for filtering
        grown = labels.filter(ImageFilter.MinFilter(3))
        labels = Image.fromarray(np.where(np.asarray(labels) == 255, np.asarray(grown), np.asarray(labels)))
    label = np.asarray(labels).astype(np.int64)
    skin = np.array(p.skin, np.int64)
    colours = {
        "skin": np.clip(skin + rng.integers(-3, 4, (SIZE, SIZE))[..., None], 0, 255),
        "hair": np.array(p.hair_colour, np.int64), "shoes": np.array(p.shoes_colour, np.int64),
        "lips": np.clip(skin * np.array([0.82, 0.6, 0.62]), 0, 255).astype(np.int64),
        "top": _pattern(p.top_pattern, p.top_colour, p.top_colour2, rng),
        "bottom": _pattern("solid", p.bottom_colour, p.bottom_colour, rng),
    }
    atlas = np.broadcast_to(skin, (SIZE, SIZE, 3)).copy()
    for i, name in enumerate(REGIONS):
        atlas = np.where((label == i)[..., None], colours[name], atlas)
    swatches = {"sclera": (240, 238, 232), "iris": p.iris_colour, "bottom": p.bottom_colour}
    for name, (u, v) in SWATCH_UV.items():
        x, y = int(u * SIZE), int(v * SIZE)
        atlas[y - 24:y + 24, x - 24:x + 24] = swatches[name]
    return atlas.astype(np.uint8)
