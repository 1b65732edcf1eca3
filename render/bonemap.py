"""Bone-name tables: map the bones of a rig onto the canonical humanoid skeleton. The naming
scheme (Mixamo, VRoid/VRM, Rigify, Unreal mannequin, SMPL, or our canonical names) is detected
from the names; a rig that matches none is tried against a generic alias table."""
from __future__ import annotations

import re

from render.skeleton import JOINTS, REQUIRED_JOINTS

SIDES = {"left": ("Left", "L", "l", "left"), "right": ("Right", "R", "r", "right")}


def _sided(table: dict[str, str]) -> dict[str, str]:
    """Expand "{S}"/"{s}"/"{side}" patterns for both sides: bone name -> canonical joint."""
    out = {}
    for bone, joint in table.items():
        if "{" not in bone:
            out[bone] = joint
            continue
        for side, (word, letter, lower, name) in SIDES.items():
            out[bone.format(Side=word, S=letter, s=lower, side=name)] = joint.format(side=side)
    return out


SCHEMES: dict[str, dict[str, str]] = {
    "canonical": {j: j for j in JOINTS},
    "mixamo": _sided({
        "mixamorig:Hips": "hips", "mixamorig:Spine": "spine", "mixamorig:Spine1": "chest", "mixamorig:Neck": "neck",
        "mixamorig:Head": "head", "mixamorig:{Side}Shoulder": "{side}_shoulder", "mixamorig:{Side}Arm": "{side}_upper_arm",
        "mixamorig:{Side}ForeArm": "{side}_lower_arm", "mixamorig:{Side}Hand": "{side}_hand",
        "mixamorig:{Side}UpLeg": "{side}_upper_leg", "mixamorig:{Side}Leg": "{side}_lower_leg",
        "mixamorig:{Side}Foot": "{side}_foot", "mixamorig:{Side}ToeBase": "{side}_toes"}),
    "vroid": _sided({
        "J_Bip_C_Hips": "hips", "J_Bip_C_Spine": "spine", "J_Bip_C_Chest": "chest", "J_Bip_C_Neck": "neck",
        "J_Bip_C_Head": "head", "J_Bip_{S}_Shoulder": "{side}_shoulder", "J_Bip_{S}_UpperArm": "{side}_upper_arm",
        "J_Bip_{S}_LowerArm": "{side}_lower_arm", "J_Bip_{S}_Hand": "{side}_hand",
        "J_Bip_{S}_UpperLeg": "{side}_upper_leg", "J_Bip_{S}_LowerLeg": "{side}_lower_leg",
        "J_Bip_{S}_Foot": "{side}_foot", "J_Bip_{S}_ToeBase": "{side}_toes"}),
    "cmu": _sided({  # CMU / Mixamo-style BVH without the mixamorig: prefix
        "Hips": "hips", "Spine": "spine", "Spine1": "chest", "Neck": "neck", "Head": "head",
        "{Side}Shoulder": "{side}_shoulder", "{Side}Arm": "{side}_upper_arm", "{Side}ForeArm": "{side}_lower_arm",
        "{Side}Hand": "{side}_hand", "{Side}UpLeg": "{side}_upper_leg", "{Side}Leg": "{side}_lower_leg",
        "{Side}Foot": "{side}_foot", "{Side}ToeBase": "{side}_toes"}),
    "rigify": _sided({
        "DEF-spine": "hips", "DEF-spine.001": "spine", "DEF-spine.002": "chest", "DEF-spine.004": "neck",
        "DEF-spine.006": "head", "DEF-shoulder.{S}": "{side}_shoulder", "DEF-upper_arm.{S}": "{side}_upper_arm",
        "DEF-forearm.{S}": "{side}_lower_arm", "DEF-hand.{S}": "{side}_hand", "DEF-thigh.{S}": "{side}_upper_leg",
        "DEF-shin.{S}": "{side}_lower_leg", "DEF-foot.{S}": "{side}_foot", "DEF-toe.{S}": "{side}_toes"}),
    "unreal": _sided({
        "pelvis": "hips", "spine_01": "spine", "spine_03": "chest", "neck_01": "neck", "head": "head",
        "clavicle_{s}": "{side}_shoulder", "upperarm_{s}": "{side}_upper_arm", "lowerarm_{s}": "{side}_lower_arm",
        "hand_{s}": "{side}_hand", "thigh_{s}": "{side}_upper_leg", "calf_{s}": "{side}_lower_leg",
        "foot_{s}": "{side}_foot", "ball_{s}": "{side}_toes"}),
    "smpl": _sided({
        "pelvis": "hips", "spine1": "spine", "spine3": "chest", "neck": "neck", "head": "head",
        "{side}_collar": "{side}_shoulder", "{side}_shoulder": "{side}_upper_arm", "{side}_elbow": "{side}_lower_arm",
        "{side}_wrist": "{side}_hand", "{side}_hip": "{side}_upper_leg", "{side}_knee": "{side}_lower_leg",
        "{side}_ankle": "{side}_foot", "{side}_foot": "{side}_toes"}),
}
# Bone names as our generator writes them for each scheme (canonical joint -> bone name).
BONE_NAMES = {scheme: {joint: bone for bone, joint in table.items()} for scheme, table in SCHEMES.items()}

# A generic table for rigs of no known scheme: normalised stems, sides as Left/L/l prefixes or suffixes.
_GENERIC = {
    "hips": ("hips", "pelvis", "hip", "root"), "spine": ("spine", "spine1", "spine01"),
    "chest": ("chest", "upperchest", "spine2", "spine02"), "neck": ("neck", "neck1", "neck01"), "head": ("head",),
    "{side}_shoulder": ("shoulder", "clavicle", "collar"), "{side}_upper_arm": ("upperarm", "arm"),
    "{side}_lower_arm": ("lowerarm", "forearm", "elbow"), "{side}_hand": ("hand", "wrist"),
    "{side}_upper_leg": ("upperleg", "upleg", "thigh"), "{side}_lower_leg": ("lowerleg", "leg", "calf", "shin", "knee"),
    "{side}_foot": ("foot", "ankle"), "{side}_toes": ("toes", "toebase", "toe", "ball"),
}


def normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.split(":")[-1].lower())


def _generic_side(flat: str) -> tuple[str | None, str]:
    for side, prefixes in (("left", ("left", "l")), ("right", ("right", "r"))):
        for p in prefixes:
            if flat.startswith(p) and len(flat) > len(p) + 2:
                return side, flat[len(p):]
            if flat.endswith(p) and len(flat) > len(p) + 2:
                return side, flat[:-len(p)]
    return None, flat


def _generic_map(bone_names: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for bone in bone_names:
        side, stem = _generic_side(normalise(bone))
        for joint, stems in _GENERIC.items():
            sided = "{side}" in joint
            if stem in stems and sided == (side is not None):
                name = joint.format(side=side) if sided else joint
                mapping.setdefault(name, bone)
                break
    return mapping


class UnmappableRig(ValueError):
    """A rig whose bones cannot be matched to the required humanoid joints."""


def detect_scheme(bone_names: list[str]) -> str:
    """The known scheme covering the most required joints ("generic" if none covers them all)."""
    names = set(bone_names)
    best, best_count = "generic", 0
    for scheme, table in SCHEMES.items():
        count = len({table[b] for b in names if b in table} & set(REQUIRED_JOINTS))
        if count > best_count:
            best, best_count = scheme, count
    return best if best_count == len(REQUIRED_JOINTS) else "generic"


def map_bones(bone_names: list[str]) -> dict[str, str]:
    """canonical joint -> bone name; raises UnmappableRig naming the required joints not found."""
    scheme = detect_scheme(bone_names)
    if scheme == "generic":
        mapping = _generic_map(bone_names)
    else:
        table = SCHEMES[scheme]
        mapping = {table[b]: b for b in bone_names if b in table}
    missing = [j for j in REQUIRED_JOINTS if j not in mapping]
    if missing:
        found = ", ".join(sorted(mapping)) or "none"
        raise UnmappableRig(f"rig does not map to the humanoid skeleton: missing {', '.join(missing)} "
                            f"(mapped: {found})")
    return mapping
