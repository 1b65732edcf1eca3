"""Bone-name tables: map the bones of any rig onto the canonical humanoid skeleton by name
(our canonical names, Mixamo, VRM humanoid), after normalising case, separators and prefixes."""
from __future__ import annotations

import re

from render.skeleton import JOINTS, REQUIRED_JOINTS

_SIDE_WORDS = {"left": ("left", "l"), "right": ("right", "r")}
# canonical joint -> alias stems (without side); {s} is replaced by the side spellings.
_ALIASES = {
    "hips": ("hips", "pelvis", "hip"),
    "spine": ("spine", "spine0", "spine01"),
    "chest": ("chest", "spine1", "spine02", "upperchest", "spine2"),
    "neck": ("neck", "neck01"),
    "head": ("head",),
    "{s}_shoulder": ("{s}shoulder", "shoulder{s}", "{s}clavicle", "clavicle{s}"),
    "{s}_upper_arm": ("{s}upperarm", "upperarm{s}", "{s}arm", "arm{s}"),
    "{s}_lower_arm": ("{s}lowerarm", "lowerarm{s}", "{s}forearm", "forearm{s}"),
    "{s}_hand": ("{s}hand", "hand{s}"),
    "{s}_upper_leg": ("{s}upperleg", "upperleg{s}", "{s}upleg", "{s}thigh", "thigh{s}"),
    "{s}_lower_leg": ("{s}lowerleg", "lowerleg{s}", "{s}leg", "leg{s}", "{s}calf", "calf{s}", "{s}shin"),
    "{s}_foot": ("{s}foot", "foot{s}"),
    "{s}_toes": ("{s}toes", "toes{s}", "{s}toebase", "{s}ball", "ball{s}"),
}
_PREFIXES = re.compile(r"^(mixamorig\d*|j_bip_c_|j_bip_|bip0?1|def|orgbone|armature)")


def normalise(name: str) -> str:
    flat = re.sub(r"[^a-z0-9]", "", name.lower().split(":")[-1] if ":" in name else name.lower())
    return _PREFIXES.sub("", flat)


def _table() -> dict[str, str]:
    table = {}
    for joint, stems in _ALIASES.items():
        if "{s}" not in joint:
            table.update({stem: joint for stem in stems})
            continue
        for side, spellings in _SIDE_WORDS.items():
            for stem in stems:
                for spelling in spellings:
                    table[stem.format(s=spelling)] = joint.format(s=side)
    table.update({normalise(j): j for j in JOINTS})
    return table


ALIAS_TABLE = _table()


class UnmappableRig(ValueError):
    """A rig whose bones cannot be matched to the required humanoid joints."""


def map_bones(bone_names: list[str]) -> dict[str, str]:
    """canonical joint -> bone name; raises UnmappableRig naming the required joints not found."""
    mapping: dict[str, str] = {}
    for bone in bone_names:
        joint = ALIAS_TABLE.get(normalise(bone))
        if joint and joint not in mapping:
            mapping[joint] = bone
    missing = [j for j in REQUIRED_JOINTS if j not in mapping]
    if missing:
        found = ", ".join(sorted(mapping)) or "none"
        raise UnmappableRig(f"rig does not map to the humanoid skeleton: missing {', '.join(missing)} "
                            f"(mapped: {found})")
    return mapping
