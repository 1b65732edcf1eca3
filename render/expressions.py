"""Expressions by name: specs use canonical expression names; each character drives the shape
keys its pipeline calls them (ARKit blendshapes, VRM presets, VRoid's Fcl_ keys, our procedural
names). A canonical expression may drive several keys (ARKit's left and right smile)."""
from __future__ import annotations

import re

# canonical -> alternatives, each a set of shape keys that together make the expression
ALIASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "smile": (("smile",), ("mouthSmileLeft", "mouthSmileRight"), ("mouthSmile",), ("happy",), ("joy",),
              ("Fcl_ALL_Joy",), ("Fcl_MTH_Joy",)),
    "mouth_open": (("mouth_open",), ("jawOpen",), ("aa",), ("a",), ("Fcl_MTH_A",), ("mouthOpen",)),
    "eyes_closed": (("eyes_closed",), ("eyeBlinkLeft", "eyeBlinkRight"), ("blink",), ("Fcl_EYE_Close",),
                    ("eyesClosed",)),
}


def _flat(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def expression_map(shape_keys: list[str]) -> dict[str, list[str]]:
    """canonical expression -> the character's shape keys for it (the first alternative whose
    keys it all has); expressions it has no keys for are left out."""
    by_flat = {_flat(k): k for k in shape_keys}
    mapping = {}
    for canonical, alternatives in ALIASES.items():
        for keys in alternatives:
            if all(_flat(k) in by_flat for k in keys):
                mapping[canonical] = [by_flat[_flat(k)] for k in keys]
                break
    return mapping
