"""Face landmarks of rigs without ``kp_*`` nodes, found on the head's own surface in the rest
pose: the eyes from what the asset says of them (VRM eye bones, bones or meshes named as eyes,
eye-closing shape keys) or from the eye sockets, the nose at the most forward point of the face,
the ears at the sides of the head. render.characters adds them as nodes riding on the head bone.
``char`` is a render.characters.Character (not imported: that module imports this one)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from render.expressions import expression_map
# They are found on the head's own surface in the rest pose and then ride on the head bone like kp_
# nodes. Characters face +z with +y up, so a character's left is +x (render.geometry); the head's
# frame is the world's, and sizes are fractions of the head's extent along its axes.

AXES = {"left": (0, 1.0), "right": (0, -1.0), "front": (2, 1.0)}  # where rays come from: axis, sign
EYE_WORDS = frozenset({"eye", "eyes", "eyeball", "eyeballs", "iris", "pupil", "cornea", "sclera"})
NOT_EYE_WORDS = frozenset({"brow", "brows", "eyebrow", "eyebrows", "lash", "lashes", "eyelash", "eyelashes", "lid",
                           "lids", "eyelid", "eyelids", "socket", "occlusion", "tear", "tearline", "shadow", "target",
                           "look", "aim", "ctrl", "control", "highlight"})
VRM_EYE_BONES = ("leftEye", "rightEye")
SOCKET_DEPTH = 0.012   # x head height: the least dip of the face against brow and cheek that makes an eye socket
# x head height: how far under the surface each face landmark sits, so that where it lies on the
# silhouette (the nose tip in profile, an ear seen from the front) it falls inside the alpha mask:
# about 1 mm on a real head, a third of a pixel in a full-body 512 x 768 render.
SURFACE_INSET = 0.004


def _words(name: str) -> set[str]:
    """Lower-case words of a name, split at non-alphanumerics and camelCase humps."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name or "")
    return {w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w}


def says_eye(*names: str) -> bool | None:
    """True for an eye's name (eye, eyeball, iris, ...), False for its neighbours' (brow, lash,
    lid, ...), None where the names say neither; the first name that says something decides."""
    for name in names:
        words = _words(name)
        if words & NOT_EYE_WORDS:
            return False
        if words & EYE_WORDS:
            return True
    return None


def vrm_eye_nodes(gltf: dict) -> list[int]:
    """glTF node indices of the eye bones a VRM 0.x or 1.0 humanoid names."""
    extensions = gltf.get("extensions", {})
    nodes = []
    bones = extensions.get("VRM", {}).get("humanoid", {}).get("humanBones", [])
    if isinstance(bones, list):  # VRM 0.x: [{"bone": "leftEye", "node": 12}, ...]
        nodes += [b.get("node") for b in bones if isinstance(b, dict) and b.get("bone") in VRM_EYE_BONES]
    bones = extensions.get("VRMC_vrm", {}).get("humanoid", {}).get("humanBones", {})
    if isinstance(bones, dict):  # VRM 1.0: {"leftEye": {"node": 12}, ...}
        nodes += [bones[b].get("node") for b in VRM_EYE_BONES if isinstance(bones.get(b), dict)]
    return [n for n in nodes if isinstance(n, int) and 0 <= n < len(gltf.get("nodes", []))]


def eye_bones(char, named: list[int]) -> list[np.ndarray]:
    """Rest positions of the eye bones: those a VRM humanoid names (``named``), else the nodes under
    the head whose names say eye (LeftEye, Eye_L, J_Adj_L_FaceEye, CC_Base_L_Eye, DEF-eye.L, ...)."""
    if not named:
        under_head = {char.joint_nodes["head"]}
        for n in range(len(char.parents)):  # nodes are stored parents-first
            if char.parents[n] in under_head:
                under_head.add(n)
                if says_eye(char.node_names[n]):
                    named.append(n)
    return [char.global_rest[n][:3, 3] for n in named]


@dataclass
class EyeHints:
    """What an asset says about its eyes: its eye bones (rest positions) and eye meshes (vertices)."""
    bones: list[np.ndarray] = field(default_factory=list)
    meshes: list[np.ndarray] = field(default_factory=list)


class _Head:
    """The head's rest surface: the faces the head bone and the bones under it (eyes, jaw, hair)
    dominate (Primitive.head_faces), with orthographic ray casts onto it."""

    def __init__(self, char):
        self.triangles = np.vstack([p.positions[p.faces[p.head_faces]] for p in char.primitives]).astype(float)
        self.vertices = np.unique(self.triangles.reshape(-1, 3), axis=0)
        if len(self.vertices) < 10:
            raise ValueError("too few vertices follow the head bone to place the face")  # the loader checks first
        self.lo, self.hi = self.vertices.min(0), self.vertices.max(0)
        self.size = self.hi - self.lo

    def cast(self, queries: np.ndarray, towards: str) -> np.ndarray:
        """Parallel rays coming from the ``towards`` side of the head (a key of AXES) through
        ``queries``, given as the other two coordinates in x, y, z order: the coordinate along
        the rays of each one's first hit, NaN where it hits nothing."""
        axis, sign = AXES[towards]
        queries = np.atleast_2d(np.asarray(queries, float))
        other = [a for a in range(3) if a != axis]
        tri = self.triangles[:, :, other]
        height = self.triangles[:, :, axis] * sign      # larger: met first
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        keep = np.abs(det) > 1e-14                      # triangles seen edge-on are met by no ray
        tri, height, e1, e2, det = tri[keep], height[keep], e1[keep], e2[keep], det[keep]
        box_lo, box_hi = tri.min(1), tri.max(1)
        out = np.full(len(queries), -np.inf)
        for start in range(0, len(queries), 64):  # a few dozen neighbouring rays at a time
            q = queries[start:start + 64]
            near = np.flatnonzero((box_hi >= q.min(0)).all(1) & (box_lo <= q.max(0)).all(1))
            if not len(near):
                continue
            d = q[:, None, :] - tri[near, 0][None]      # (queries, triangles, 2)
            w1 = (d[..., 0] * e2[near, 1] - d[..., 1] * e2[near, 0]) / det[near]
            w2 = (e1[near, 0] * d[..., 1] - e1[near, 1] * d[..., 0]) / det[near]
            inside = (w1 >= -1e-9) & (w2 >= -1e-9) & (w1 + w2 <= 1 + 1e-9)
            h = height[near]
            hit = h[:, 0] + w1 * (h[:, 1] - h[:, 0]) + w2 * (h[:, 2] - h[:, 0])
            out[start:start + 64] = np.where(inside, hit, -np.inf).max(1)
        return np.where(np.isfinite(out), out * sign, np.nan)

    def surface_point(self, query, towards: str) -> np.ndarray:
        """Where a ray from the ``towards`` side through ``query`` (as for cast) first meets the
        head, moved SURFACE_INSET under the surface; where it meets nothing, the outermost head
        vertex near the ray."""
        axis, sign = AXES[towards]
        query = np.asarray(query, float)
        other = [a for a in range(3) if a != axis]
        hit = self.cast(query, towards)[0]
        if np.isfinite(hit):
            point = np.empty(3)
            point[other], point[axis] = query, hit
        else:
            distance = np.linalg.norm(self.vertices[:, other] - query, axis=1)
            near = self.vertices[distance <= distance.min() + 0.02 * self.size[1]]
            point = near[np.argmax(near[:, axis] * sign)].copy()
        point[axis] -= sign * SURFACE_INSET * self.size[1]
        return point


def _eye_anchors(head: _Head, midline: float, sources: list[np.ndarray]) -> dict[float, np.ndarray]:
    """Per side (+1 the character's left, -1 its right), the (x, y) of the eye from the first of
    ``sources`` (points, with a weight as a 4th column) that places one on the face; a side it
    does not place mirrors the other across the midline."""
    width, height = head.size[:2]
    for points in sources:
        offset = points[:, 0] - midline
        plausible = ((np.abs(offset) > 0.02 * width) & (np.abs(offset) < 0.45 * width) & (points[:, 3] > 0)
                     & (points[:, 1] > head.lo[1] + 0.2 * height) & (points[:, 1] < head.hi[1] - 0.1 * height))
        anchors = {}
        for side in (1.0, -1.0):
            pick = plausible & (np.sign(offset) == side)
            if pick.any():
                anchors[side] = np.average(points[pick, :2], axis=0, weights=points[pick, 3])
        if anchors:
            for side in (1.0, -1.0):
                if side not in anchors:
                    x, y = anchors[-side]
                    anchors[side] = np.array([2 * midline - x, y])
            return anchors
    return {}


def _eye_sockets(head: _Head, midline: float, nose: np.ndarray) -> list[np.ndarray]:
    """Eye sockets as an _eye_anchors source: per side, the deepest dip of the face seen from the
    front against the brow above and the cheek below, in the band above the nose; none where the
    face has no dip that deep."""
    width, height = head.size[:2]
    step, reach = 0.01 * height, 0.06 * height
    xs = midline + np.arange(-0.34 * width, 0.34 * width + step / 2, step)
    ys = np.arange(nose[1] - reach, nose[1] + 0.38 * height + reach + step / 2, step)
    grid = np.stack(np.meshgrid(xs, ys), -1)                            # (rows up the face, columns, 2)
    front = head.cast(grid.reshape(-1, 2), "front").reshape(grid.shape[:2])
    k = int(round(reach / step))
    dip = (front[2 * k:] + front[:-2 * k]) / 2 - front[k:-k]            # brow and cheek against the middle
    middle = grid[k:-k]
    band = (middle[..., 1] >= nose[1] + 0.06 * height) & (middle[..., 1] <= nose[1] + 0.34 * height)
    sockets = []
    for side in (1.0, -1.0):
        offset = (middle[..., 0] - midline) * side
        score = np.where(band & (offset >= 0.06 * width) & (offset <= 0.32 * width) & np.isfinite(dip), dip, -np.inf)
        best = np.unravel_index(np.argmax(score), score.shape)
        if score[best] >= SOCKET_DEPTH * height:
            sockets.append([*middle[best], 0.0, 1.0])
    return [np.array(sockets)] if sockets else []


def face_points(char, hints: EyeHints) -> dict[str, np.ndarray]:
    """Nose, eyes and ears (world, rest pose) on the head's own surface. The eyes: where the asset's
    eye bones, else its eye meshes, else its eye-closing shape keys put them, else in the face's
    eye sockets, else at half the head's height; each on the first surface met from the front (the
    eyeball, the lid, the socket). The nose: the most forward point of the face below the eyes. The
    ears: on the side of the head, half-way between eye and nose height, where the head's side
    stands out most (the ear, or the hair over it)."""
    head = _Head(char)
    lo, (width, height, depth) = head.lo, head.size
    box_mid = (head.lo + head.hi) / 2

    def points(array, weights=None) -> np.ndarray:
        array = np.asarray(array, float).reshape(-1, 3)
        return np.column_stack([array, np.ones(len(array)) if weights is None else weights])

    sources = [points(hints.bones)] if hints.bones else []
    if hints.meshes:
        sources.append(points(np.vstack(hints.meshes)))
    moved = [(prim.positions + 0.5 * prim.morphs[key], np.linalg.norm(prim.morphs[key], axis=1))
             for key in expression_map(char.shape_keys).get("eyes_closed", [])
             for prim in char.primitives if key in prim.morphs]
    if moved:  # eyelids (or eyes) an eye-closing shape key moves, half-way, weighted by how far
        shift = np.concatenate([s for _, s in moved])
        sources.append(points(np.vstack([p for p, _ in moved]), np.where(shift > 1e-3 * height, shift, 0.0)))
    anchors = _eye_anchors(head, box_mid[0], sources)

    v = head.vertices
    top = min(lo[1] + 0.65 * height, min((a[1] for a in anchors.values()), default=np.inf) - 0.05 * height)
    face = (np.abs(v[:, 0] - box_mid[0]) < 0.2 * width) & (v[:, 1] > lo[1] + 0.05 * height) & (v[:, 1] < top)
    if face.any():
        nose = v[face][np.argmax(v[face][:, 2])].copy()
        nose[2] -= SURFACE_INSET * height
    else:
        nose = head.surface_point(box_mid[:2], "front")
    midline = nose[0]
    if not anchors:
        anchors = _eye_anchors(head, midline, _eye_sockets(head, midline, nose))
    if not anchors:  # a face without features
        anchors = {side: np.array([midline + side * 0.17 * width, lo[1] + 0.5 * height]) for side in (1.0, -1.0)}
    out = {"nose": nose}
    for side, name in ((1.0, "left"), (-1.0, "right")):
        out[f"{name}_eye"] = head.surface_point(anchors[side], "front")
    ear_y = ((anchors[1.0][1] + anchors[-1.0][1]) / 2 + nose[1]) / 2
    ys, zs = np.meshgrid(ear_y + np.linspace(-0.05, 0.05, 5) * height,
                         np.linspace(lo[2] + 0.05 * depth, nose[2] - 0.25 * depth, 40))
    band = np.column_stack([ys.ravel(), zs.ravel()])                    # (y, z) across the side of the head
    for name in ("left", "right"):
        reach = head.cast(band, name) * AXES[name][1]
        found = np.isfinite(reach)
        if found.any():  # the upper half of what stands out beyond the median
            stand_out = np.where(found, reach - (np.median(reach[found]) + reach[found].max()) / 2, 0.0).clip(0)
        ear_z = np.average(band[:, 1], weights=stand_out) if found.any() and stand_out.sum() > 0 else box_mid[2]
        out[f"{name}_ear"] = head.surface_point((ear_y, ear_z), name)
    return out
