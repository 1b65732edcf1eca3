"""The character itself: torso, head, face, hair, arms and legs laid out on the rest skeleton
from the sampled parameters, and the face shape keys that move its eyes and mouth."""
from __future__ import annotations

import numpy as np

from render.procedural.atlas import draw_atlas
from render.procedural.mesh import Mesh, blend
from render.procedural.params import CharacterParams
from render.skeleton import (
    LANDMARKS,
    face_landmark_offsets,
    head_radii,
    rest_positions,
)

SHAPE_KEYS = ("smile", "mouth_open", "eyes_closed")


def build_character(p: CharacterParams) -> dict:
    """Mesh arrays, skin, shape keys, texture and landmarks of one procedural character."""
    rng = np.random.default_rng([p.seed, 0xA71A5])
    pr = p.proportions
    h, hh = pr.height, pr.head_height
    rest = rest_positions(pr)
    mesh = Mesh()
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
                  blend(f"{side}_shoulder", f"{side}_upper_arm", f"{side}_lower_arm"), sleeve_upper,
                  across=(0, 0, 1))
        mesh.tube(la - (sign * 0.01 * h, 0, 0), hand, lambda t: (arm_r * (0.8 - 0.2 * t), arm_r * (0.8 - 0.2 * t)),
                  blend(f"{side}_upper_arm", f"{side}_lower_arm", f"{side}_hand"), sleeve_lower, across=(0, 0, 1))
        hand_len = 0.1 * h * pr.arm_factor
        mesh.ellipsoid(hand + (sign * hand_len * 0.45, 0, 0), (hand_len / 2, 0.014 * h * lg, 0.035 * h * lg),
                       [(f"{side}_hand", 1.0)], "skin")
        ul, ll, ft, toes = (rest[f"{side}_{j}"] for j in ("upper_leg", "lower_leg", "foot", "toes"))
        thigh_r = 0.06 * h * (0.5 + 0.5 * g) * lg
        pants_lower = "pants" if p.trousers == "long" else "skin"
        mesh.tube(ul + (0, 0.05 * h, 0), ll, lambda t: (thigh_r * (1 - 0.3 * t), thigh_r * (1 - 0.3 * t)),
                  blend("hips", f"{side}_upper_leg", f"{side}_lower_leg"), "pants")
        mesh.tube(ll + (0, 0.02 * h, 0), ft, lambda t: (thigh_r * (0.7 - 0.2 * t), thigh_r * (0.7 - 0.2 * t)),
                  blend(f"{side}_upper_leg", f"{side}_lower_leg", f"{side}_foot"), pants_lower)
        foot_len = pr.foot_length * h
        heel, tip = ft + (0, -0.02 * h, -0.25 * foot_len), np.array([ft[0], 0.015 * h, 0.78 * foot_len])
        mesh.tube(heel, tip, lambda t: (0.038 * h * lg, 0.028 * h),
                  lambda t: [(f"{side}_foot", 1.0)] if t < 0.6 else [(f"{side}_foot", 0.5), (f"{side}_toes", 0.5)],
                  "shoes", rings=8, segments=14, across=(1, 0, 0), roundness=2.5)

    arrays = mesh.arrays()
    arrays["morphs"] = _shape_keys(arrays["positions"], parts, marks, mouth_centre, mouth_w, eye_r)
    arrays["atlas"] = draw_atlas(p, rng)
    arrays["rest"] = rest
    arrays["landmarks"] = {name: marks[name] for name in LANDMARKS}
    return arrays


def _add_hair(mesh: Mesh, style: str, centre, radii, weights) -> None:
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
