"""Captions of renders from what made them, with no model: the view (camera), the pose (from the
skeleton's keypoints), the expression (shape-key weights), the clothing and its colours (the
procedural character's parameters, kept in its .glb) and the kind of background."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# A small named palette: a colour is called by its nearest entry.
PALETTE = {
    "black": (20, 20, 20), "dark grey": (80, 80, 80), "grey": (140, 140, 140), "light grey": (200, 200, 200),
    "white": (245, 245, 245), "red": (200, 30, 30), "dark red": (120, 20, 25), "orange": (235, 130, 30),
    "yellow": (235, 215, 40), "olive": (120, 120, 30), "green": (40, 160, 60), "dark green": (20, 80, 40),
    "teal": (30, 140, 140), "light blue": (120, 180, 230), "blue": (40, 70, 200), "navy": (25, 30, 90),
    "purple": (120, 50, 160), "pink": (235, 130, 180), "magenta": (200, 40, 150), "brown": (110, 70, 40),
    "beige": (220, 200, 160), "tan": (190, 150, 100),
}
BACKGROUND_KINDS = {"gradient": "a colour gradient", "noise": "a noisy texture", "stripes": "stripes",
                    "checks": "a checkerboard", "room": "a simple room"}
PATTERNS = {"stripes": "striped", "checks": "checked", "dots": "dotted"}
EXPRESSIONS = {"smile": "smiling", "mouth_open": "with an open mouth", "eyes_closed": "with closed eyes"}
SCHEMA_VERSION = 1  # of these captions: part of the lineage of each record


def colour_name(rgb) -> str:
    names = list(PALETTE)
    distances = np.linalg.norm(np.asarray(list(PALETTE.values()), float) - np.asarray(rgb, float), axis=1)
    return names[int(distances.argmin())]


def view_phrase(camera: dict) -> str:
    azimuth, elevation = abs(camera.get("azimuth_deg", 0.0)), camera.get("elevation_deg", 0.0)
    view = "seen from the front" if azimuth <= 25 else "in a three-quarter view" if azimuth <= 65 else "seen from the side"
    if elevation > 12:
        view += ", from slightly above"
    elif elevation < -3:
        view += ", from slightly below"
    return view


def pose_phrase(keypoints) -> str:
    """Arms and stance from OpenPose-18 keypoints (image y grows downwards)."""
    kp = np.asarray(keypoints, float)
    if kp.shape != (18, 3):
        return ""
    visible = kp[:, 2] > 0
    raised = sum(bool(visible[w] and visible[s] and kp[w, 1] < kp[s, 1]) for w, s in ((4, 2), (7, 5)))
    arms = ("with arms down", "with one arm raised", "with both arms raised")[raised]
    if all(visible[[8, 11, 10, 13]]):
        hips, ankles = abs(kp[8, 0] - kp[11, 0]), abs(kp[10, 0] - kp[13, 0])
        if ankles > 2.0 * max(hips, 1.0):
            return f"standing with legs apart, {arms}"
    return f"standing {arms}"


def expression_phrase(expression: dict) -> str:
    shown = [EXPRESSIONS.get(name, name.replace("_", " ")) for name, weight in sorted(expression.items())
             if weight >= 0.35]
    return ", ".join(shown) if shown else "with a neutral expression"


def clothing_phrase(params: dict | None) -> str:
    """The procedural character's hair and clothing, or nothing for a character of another source."""
    if not params:
        return ""
    shirt = {"none": "sleeveless top", "short": "short-sleeved shirt", "long": "long-sleeved shirt"}[params["sleeves"]]
    colours = colour_name(params["shirt_colour"])
    if params["shirt_pattern"] in PATTERNS:  # patterns alternate the two shirt colours
        second = colour_name(params["shirt_colour2"])
        colours = f"{colours} and {second} {PATTERNS[params['shirt_pattern']]}" if second != colours else \
            f"{colours} {PATTERNS[params['shirt_pattern']]}"
    hair = "bald" if params["hair_style"] == "bald" else f"with {colour_name(params['hair_colour'])} hair"
    legs = "shorts" if params["trousers"] == "shorts" else "trousers"
    return (f"{hair}, wearing a {colours} {shirt}, {colour_name(params['pants_colour'])} {legs} and "
            f"{colour_name(params['shoes_colour'])} shoes")


def background_phrase(background: dict | None) -> str:
    if background is None:
        return "on a plain background"
    name = str(background.get("name", ""))
    if background.get("source") == "procedural":
        kind = name.rsplit("-", 1)[-1]
        return f"in front of {BACKGROUND_KINDS.get(kind, 'a plain background')}"
    return "in front of a photographed background"


class CharacterParams:
    """The generator's parameters of each procedural character, read once from its .glb
    (``asset.extras.pairforge.params``); None for other characters or a folder not given."""

    def __init__(self, folder: str | None):
        self.folder = Path(folder) if folder else None
        self._params: dict[str, dict | None] = {}

    def of(self, character_id: str) -> dict | None:
        if character_id not in self._params:
            self._params[character_id] = self._read(character_id)
        return self._params[character_id]

    def _read(self, character_id: str) -> dict | None:
        from render.gltf import Glb, GltfError

        path = self.folder / f"{character_id}.glb" if self.folder else None
        if path is None or not path.is_file():
            return None
        try:
            extras = Glb.load(path).gltf.get("asset", {}).get("extras", {}).get("pairforge", {})
        except GltfError:
            return None
        return extras.get("params")


def character_caption(meta: dict, spec: dict, params: dict | None, background: dict | None) -> str:
    """One rendered character: clothing, pose, expression, view, background."""
    parts = ["a 3D-rendered character", clothing_phrase(params),
             pose_phrase(meta.get("src", {}).get("keypoints")), expression_phrase(spec.get("expression", {})),
             view_phrase(spec.get("camera", {})), background_phrase(background)]
    return ", ".join(p for p in parts if p) + "."


def scene_caption(meta: dict, characters: CharacterParams) -> str:
    """A router scene: its characters from left to right, and the background."""
    subjects = sorted(meta["subjects"], key=lambda s: s["placement"]["offset"][0])
    words = {2: "two", 3: "three", 4: "four"}
    described = []
    for i, subject in enumerate(subjects):
        where = "on the left" if i == 0 else "on the right" if i == len(subjects) - 1 else "in the middle"
        clothing = clothing_phrase(characters.of(subject["character_id"]))
        described.append(f"{where} a character {clothing}" if clothing else f"{where} a character")
    return (f"{words.get(len(subjects), len(subjects))} 3D-rendered characters side by side {background_phrase(meta['background'])}: "
            + "; ".join(described) + ".")


def metadata_caption(kind: str, meta: dict, characters: CharacterParams) -> str:
    """The caption of one record of ``kind`` from its json."""
    if kind == "synthetic_pair":
        spec = meta["src"]["spec"]
        return character_caption(meta, spec, characters.of(meta["character_id"]), None)
    if kind == "composited_pair":
        spec = meta["src"]["pair_spec"]
        return character_caption(meta, spec, characters.of(meta["character_id"]), meta["background"])
    if kind == "router_sample":
        return scene_caption(meta, characters)
    if kind == "multiview":
        return f"an object ({meta['object_id']}) seen from {len(meta['views'])} views around it."
    raise ValueError(f"the metadata captioner has no template for {kind!r} records; use a model (--model)")
