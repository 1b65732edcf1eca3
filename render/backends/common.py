"""What every backend computes the same way: the character posed and framed by a spec, and from
the posed character its keypoints with their visibility (from a part-id buffer of the posed
triangles), the face box, the head's pixel box, the camera and the white-background composite."""
from __future__ import annotations

import numpy as np

from render.characters import Character, PosedCharacter, pose_character
from render.geometry import project, rotation_xyz
from render.skeleton import KEYPOINT_PARTS, OPENPOSE_SOURCES
from render.spec import SceneSpec, resolve_camera


NEAR = 0.01            # triangles with a vertex nearer than this (metres) are dropped, like pyrender's znear
CANDIDATES = 1 << 18   # (triangle, pixel) pairs tested at once: bounds memory (~100 bytes each)
# A keypoint's window: (2r+1)^2 pixels around it, r this share of the frame height (2 px at 768).
WINDOW_HALF = 0.003
# A keypoint is visible when at least this share of its window shows its own parts or nothing.
OWN_SHARE = 0.5
# Face landmarks sit on the head's surface: a surface this far (x character height) in front of one
# (the back of the head, seen from behind) hides it even though it is the head's own. An ear sits
# at the side: seen from the front, cheek and hair stand a few centimetres in front of it and a
# pose estimator still marks it; in profile the far ear lies a whole head width (~0.1) behind.
FACE_DEPTH_MARGIN = {"nose": 0.015, "eye": 0.015, "ear": 0.04}
# Per OpenPose-18 keypoint: how far (x character height) surface may stand in front of it, for
# face landmarks (None for joints, which sit inside the body).
_DEPTH_MARGINS = tuple(None if kind == "joint" else FACE_DEPTH_MARGIN[name.split("_")[-1]]
                       for kind, name in OPENPOSE_SOURCES.values())


def pose_and_frame(character: Character, spec: SceneSpec) -> tuple[PosedCharacter, np.ndarray, np.ndarray, float]:
    """``character`` posed as ``spec`` says (shape keys, then numpy linear-blend skinning) and the
    camera that frames it: (posed character, all its vertices stacked (N, 3) float32,
    camera-to-world pose (4, 4), focal length in pixels)."""
    width, height = spec.resolution
    posed = pose_character(character, spec.pose, spec.expression)
    vertices = np.vstack(posed.positions)
    camera_pose, fpx = resolve_camera(spec.camera, vertices[::4], posed.head_outline(), width, height)
    return posed, vertices, camera_pose, fpx


class FrontTriangles:
    """The front-facing triangles of a posed mesh that lie in front of the camera, projected, and
    which of them the camera sees at each pixel centre: the fake backend draws its pictures from
    this, and every backend its part ids (a pixel is covered when its centre lies in a triangle,
    edges included; the nearest triangle wins, the earlier one on an exact tie)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, camera_pose: np.ndarray, fpx: float, width: int,
                 height: int):
        xy, z = project(vertices, camera_pose, fpx, width, height)
        tri_xy, tri_z = xy[faces], z[faces]                                  # (F, 3, 2), (F, 3)
        e1, e2 = tri_xy[:, 1] - tri_xy[:, 0], tri_xy[:, 2] - tri_xy[:, 0]
        area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        # Counter-clockwise (glTF front faces) in y-up GL terms is a negative area in y-down pixels;
        # pyrender culls back faces of single-sided materials, as does this.
        self.index = np.flatnonzero((tri_z > NEAR).all(axis=1) & (area < 0))  # into ``faces``
        keep = self.index
        self.lo = np.ceil(tri_xy[keep].min(axis=1) - 0.5).astype(np.int64)   # first pixel centre inside the box
        self.hi = np.floor(tri_xy[keep].max(axis=1) - 0.5).astype(np.int64)
        # Per kept triangle, one row: vertex 0, the barycentric weights' gradients (edges over the
        # signed area) and 1 / depth at the vertices.
        inv_area = 1.0 / area[keep]
        self.rows = np.column_stack([tri_xy[keep, 0] - 0.5, e1[keep] * inv_area[:, None],
                                     e2[keep] * inv_area[:, None], 1.0 / tri_z[keep]])
        self.width = width

    def cover(self, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pixels of ``box`` (x0, y0, x1, y1) that some triangle covers: (flat pixel index in
        the whole frame, depth float32, the winning triangle as an index into ``self.index``)."""
        x0, y0, x1, y1 = box
        lo, hi = np.maximum(self.lo, (x0, y0)), np.minimum(self.hi, (x1 - 1, y1 - 1))
        spans = hi - lo + 1
        chosen = np.flatnonzero((spans > 0).all(axis=1))
        lo, spans = lo[chosen], spans[chosen]
        counts = spans[:, 0] * spans[:, 1]
        pixels, depths, owners = [], [], []
        ends = np.cumsum(counts)
        start = 0
        while start < len(chosen):
            # triangles [start, stop) whose candidate pixels fit in one batch (at least one triangle)
            stop = max(int(np.searchsorted(ends, (ends[start - 1] if start else 0) + CANDIDATES, "right")), start + 1)
            n = counts[start:stop]
            tri = np.repeat(np.arange(start, stop), n)
            r = self.rows[chosen[tri]]
            row, col = np.divmod(np.arange(len(tri)) - np.repeat(np.cumsum(n) - n, n), spans[tri, 0])
            px, py = lo[tri, 0] + col, lo[tri, 1] + row
            dx, dy = px - r[:, 0], py - r[:, 1]      # pixel centre - vertex 0 (the 0.5 is in the row)
            b1 = dx * r[:, 5] - dy * r[:, 4]         # weight of vertex 1: cross(p - v0, e2) / area
            b2 = dy * r[:, 2] - dx * r[:, 3]         # weight of vertex 2: cross(e1, p - v0) / area
            b0 = 1.0 - b1 - b2
            hit = (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
            r, b0, b1, b2 = r[hit], b0[hit], b1[hit], b2[hit]
            iz = b0 * r[:, 6] + b1 * r[:, 7] + b2 * r[:, 8]
            pixels.append(py[hit] * self.width + px[hit])
            depths.append((1.0 / iz).astype(np.float32))
            owners.append(chosen[tri[hit]])
            start = stop
        if not pixels:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        pixel, z_hit, owner = np.concatenate(pixels), np.concatenate(depths), np.concatenate(owners)
        # Sort by (pixel, depth): positive float32 bits order like the floats, so one int64 key does it;
        # the stable sort keeps candidate (triangle) order on ties.
        key = (pixel.astype(np.int64) << 32) | z_hit.view(np.int32).astype(np.int64)
        order = np.argsort(key, kind="stable")
        pixel_sorted = pixel[order]
        first = np.ones(len(order), bool)
        first[1:] = pixel_sorted[1:] != pixel_sorted[:-1]
        win = order[first]
        return pixel[win], z_hit[win], owner[win]


def keypoints_with_visibility(points_3d: np.ndarray, triangles: FrontTriangles, face_parts: np.ndarray,
                              camera_pose: np.ndarray, fpx: float, depth: np.ndarray,
                              character_height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visibility as a pose estimator has it: ((18, 3) [x, y, visible], in_frame (18,), occluded
    (18,)). In frame: the point projects inside the image, in front of the camera. Occluded: in
    frame, but less than OWN_SHARE of the window around it shows its own body parts
    (render.skeleton.KEYPOINT_PARTS) or nothing, the rest being other parts of the body (an arm
    behind the back, a hand over the face), from a part-id buffer of the posed triangles; a face
    landmark also when the renderer's depth shows surface in front of it (the back of the head).
    Visible: in frame and not occluded."""
    height, width = depth.shape
    xy, z = project(points_3d, camera_pose, fpx, width, height)
    inside = np.isfinite(xy).all(axis=1) & (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) \
        & (xy[:, 1] < height) & (z > 0)
    occluded = np.zeros(len(points_3d), bool)
    half = max(1, round(WINDOW_HALF * height))
    for i in np.flatnonzero(inside):
        px, py = int(xy[i, 0]), int(xy[i, 1])
        box = (max(px - half, 0), max(py - half, 0), min(px + half + 1, width), min(py + half + 1, height))
        _, _, owner = triangles.cover(box)
        window = (box[2] - box[0]) * (box[3] - box[1])
        others = int((~np.isin(face_parts[triangles.index[owner]], list(KEYPOINT_PARTS[i]))).sum())
        occluded[i] = window - others < OWN_SHARE * window
        if not occluded[i] and _DEPTH_MARGINS[i] is not None:
            surface = depth[max(py - 1, 0):py + 2, max(px - 1, 0):px + 2]
            surface = surface[surface > 0]
            occluded[i] = surface.size > 0 and surface.min() < z[i] - _DEPTH_MARGINS[i] * character_height
    out = np.zeros((len(points_3d), 3))
    out[:, :2] = xy
    out[:, 2] = inside & ~occluded
    return out, inside, occluded


def face_box(head_outline: np.ndarray, camera_pose: np.ndarray, fpx: float, width: int, height: int) -> list[float]:
    """[x0, y0, x1, y1] of the projected crown, chin and ears."""
    xy, _ = project(head_outline, camera_pose, fpx, width, height)
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    return [round(float(v), 2) for v in (x0, y0, x1, y1)]


def on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA -> RGB over a white background."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def light_pose(camera_pose: np.ndarray, light) -> np.ndarray:
    """World pose of a directional light given relative to the camera (it shines along its -z)."""
    pose = np.eye(4)
    pose[:3, :3] = camera_pose[:3, :3] @ rotation_xyz((-light.elevation_deg, light.azimuth_deg, 0.0))
    return pose


def character_result(rgba: np.ndarray, depth: np.ndarray, posed: PosedCharacter, character: Character,
                     camera_pose: np.ndarray, fpx: float, spec) -> dict:
    """The backend-independent result dict (see render.backends) of one character render."""
    height, width = depth.shape
    faces, face_parts = character.stacked_faces()
    triangles = FrontTriangles(np.vstack(posed.positions), faces, camera_pose, fpx, width, height)
    keypoints, in_frame, occluded = keypoints_with_visibility(posed.keypoints_3d(), triangles, face_parts,
                                                              camera_pose, fpx, depth, character.height())
    head = np.vstack([positions[np.unique(prim.faces[prim.head_faces])]
                      for positions, prim in zip(posed.positions, character.primitives)])
    return {
        "rgba": rgba, "mask": rgba[..., 3] > 0, "depth": depth,
        "rgb_on_white": on_white(rgba) if spec.background == "white" else None,
        "keypoints": keypoints, "in_frame": in_frame, "occluded": occluded,
        "face_box": face_box(posed.head_outline(), camera_pose, fpx, width, height),
        "head_box": face_box(head, camera_pose, fpx, width, height) if len(head) else None,
        "camera": camera_json(camera_pose, fpx, width, height),
    }


def camera_json(camera_pose: np.ndarray, fpx: float, width: int, height: int) -> dict:
    return {"pose": camera_pose.round(6).tolist(), "focal_px": round(float(fpx), 4),
            "principal_point": [width / 2, height / 2]}
