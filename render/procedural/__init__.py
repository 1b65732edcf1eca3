"""The procedural character generator: rigged, textured humanoids with face shape keys, built
in code and written as .glb with a real glTF skin, so tests, CI and the demo need no download.

Every body part is a closed tube or ellipsoid skinned to the canonical skeleton (4 weights per
vertex); clothing, skin and hair come from one texture atlas drawn with numpy. Proportions,
colours, clothing, hair and head shape are drawn from one seed, so two seeds give visibly
different characters.

Modules: ``params`` (what a seed makes), ``mesh`` (skinned tube/ellipsoid primitives),
``atlas`` (the texture and where each part samples it), ``body`` (the character's parts and
face shape keys), ``rig`` (rest pose and bone rolls), ``writer`` (the .glb files)."""
from render.procedural.body import SHAPE_KEYS, build_character
from render.procedural.mesh import vertex_normals
from render.procedural.params import CharacterParams, character_seed, sample_params
from render.procedural.writer import generate_characters, write_character_glb

__all__ = [
    "SHAPE_KEYS",
    "CharacterParams",
    "build_character",
    "character_seed",
    "generate_characters",
    "sample_params",
    "vertex_normals",
    "write_character_glb",
]
