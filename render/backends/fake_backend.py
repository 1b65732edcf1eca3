"""The fake renderer: a GL-free numpy z-buffer rasterizer for tests and CI of stages and runners
(not for datasets). It poses and frames a character with the same numpy code as the pyrender
backend (render.backends.common.pose_and_frame), so keypoints, face box and camera are the ones
pyrender reports for the same spec; it then fills the posed triangles with one colour each (the
base colour, or the texture at the triangle's UV centroid, darkened by a fixed head-on shade),
sampled at pixel centres, with no lights, texture filtering or anti-aliasing. It imports no
EGL, OpenGL or pyrender, and the same spec gives the same bytes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from render.backends.common import character_result, pose_and_frame
from render.characters import Character, load_character
from render.geometry import project
from render.spec import SceneSpec

NEAR = 0.01            # triangles with a vertex nearer than this (metres) are dropped, like pyrender's znear
CANDIDATES = 1 << 18   # (triangle, pixel) pairs tested at once: bounds memory (~100 bytes each)
SHADE = (0.45, 0.55)   # shade = SHADE[0] + SHADE[1] * |cos(normal, view)|: shape stays readable unlit


def face_colours(character: Character) -> np.ndarray:
    """(F, 3) float RGB in 0..255 per triangle of all primitives, in order: the base colour
    factor times the texture at the triangle's UV centroid (nearest texel, clamped)."""
    out = []
    for prim in character.primitives:
        base = np.asarray(prim.colour, dtype=np.float64)[:3]
        colour = np.tile(base * 255.0, (len(prim.faces), 1))
        if prim.texture is not None and prim.uvs is not None:
            height, width = prim.texture.shape[:2]
            uv = prim.uvs[prim.faces.astype(np.int64)].mean(axis=1)  # glTF: origin top-left
            col = np.clip((uv[:, 0] * width).astype(np.int64), 0, width - 1)
            row = np.clip((uv[:, 1] * height).astype(np.int64), 0, height - 1)
            colour = colour * (prim.texture[row, col, :3].astype(np.float64) / 255.0)
        out.append(colour)
    return np.vstack(out) if out else np.zeros((0, 3))


def rasterize(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, camera_pose: np.ndarray, fpx: float,
              width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Front-facing triangles -> (rgba (H, W, 4) uint8, alpha 255 where covered, depth (H, W)
    float32 along the view axis, 0 = background). A pixel is covered when its centre lies in a
    triangle (edges included); the nearest triangle wins, the earlier one on an exact tie."""
    xy, z = project(vertices, camera_pose, fpx, width, height)
    tri_xy, tri_z = xy[faces], z[faces]                                  # (F, 3, 2), (F, 3)
    e1, e2 = tri_xy[:, 1] - tri_xy[:, 0], tri_xy[:, 2] - tri_xy[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    # Counter-clockwise (glTF front faces) in y-up GL terms is a negative area in y-down pixels;
    # pyrender culls back faces of single-sided materials, as does this.
    keep = np.flatnonzero((tri_z > NEAR).all(axis=1) & (area < 0))
    lo = np.ceil(tri_xy[keep].min(axis=1) - 0.5).astype(np.int64)      # first pixel centre inside the box
    hi = np.floor(tri_xy[keep].max(axis=1) - 0.5).astype(np.int64)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, (width - 1, height - 1))
    spans = hi - lo + 1
    inside_frame = (spans > 0).all(axis=1)
    keep, lo, spans = keep[inside_frame], lo[inside_frame], spans[inside_frame]
    counts = spans[:, 0] * spans[:, 1]

    # Per kept triangle, one row: the box's first pixel and width, vertex 0, the barycentric
    # weights' gradients (edges over the signed area) and 1 / depth at the vertices.
    inv_area = 1.0 / area[keep]
    rows = np.column_stack([lo, spans[:, 0], tri_xy[keep, 0] - 0.5, e1[keep] * inv_area[:, None],
                            e2[keep] * inv_area[:, None], 1.0 / tri_z[keep]])
    pixels, depths, owners = [], [], []
    ends = np.cumsum(counts)
    start = 0
    while start < len(keep):
        # triangles [start, stop) whose candidate pixels fit in one batch (at least one triangle)
        stop = max(int(np.searchsorted(ends, (ends[start - 1] if start else 0) + CANDIDATES, "right")), start + 1)
        n = counts[start:stop]
        tri = np.repeat(np.arange(start, stop), n)
        r = rows[tri]
        row, col = np.divmod(np.arange(len(tri)) - np.repeat(np.cumsum(n) - n, n), r[:, 2].astype(np.int64))
        px, py = r[:, 0].astype(np.int64) + col, r[:, 1].astype(np.int64) + row
        dx, dy = px - r[:, 3], py - r[:, 4]      # pixel centre - vertex 0 (the 0.5 is in the row)
        b1 = dx * r[:, 8] - dy * r[:, 7]         # weight of vertex 1: cross(p - v0, e2) / area
        b2 = dy * r[:, 5] - dx * r[:, 6]         # weight of vertex 2: cross(e1, p - v0) / area
        b0 = 1.0 - b1 - b2
        hit = (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
        r, b0, b1, b2 = r[hit], b0[hit], b1[hit], b2[hit]
        iz = b0 * r[:, 9] + b1 * r[:, 10] + b2 * r[:, 11]
        pixels.append(py[hit] * width + px[hit])
        depths.append((1.0 / iz).astype(np.float32))
        owners.append(tri[hit])
        start = stop

    rgba = np.zeros((height, width, 4), np.uint8)
    depth = np.zeros((height, width), np.float32)
    if not pixels:
        return rgba, depth
    pixel, z_hit, owner = np.concatenate(pixels), np.concatenate(depths), np.concatenate(owners)
    # Sort by (pixel, depth): positive float32 bits order like the floats, so one int64 key does it;
    # the stable sort keeps candidate (triangle) order on ties.
    key = (pixel.astype(np.int64) << 32) | z_hit.view(np.int32).astype(np.int64)
    order = np.argsort(key, kind="stable")
    pixel_sorted = pixel[order]
    first = np.ones(len(order), bool)
    first[1:] = pixel_sorted[1:] != pixel_sorted[:-1]
    win = order[first]

    # One shade per triangle: |cos| between its normal and the ray to its centroid.
    corners = vertices[faces[keep]].astype(np.float64)
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    view = camera_pose[:3, 3] - corners.mean(axis=1)
    cos = np.abs((normal * view).sum(1)) / np.maximum(np.linalg.norm(normal, axis=1) * np.linalg.norm(view, axis=1),
                                                       1e-12)
    shaded = np.clip(np.round(colours[keep] * (SHADE[0] + SHADE[1] * cos)[:, None]), 0, 255).astype(np.uint8)
    flat = rgba.reshape(-1, 4)
    flat[pixel[win], :3] = shaded[owner[win]]
    flat[pixel[win], 3] = 255
    depth.reshape(-1)[pixel[win]] = z_hit[win]
    return rgba, depth


class FakeBackend:
    """A Renderer (render.backends) that rasterizes in numpy; see the module docstring."""
    name = "fake"
    version = "1"  # of this rasterizer: bump when its pixels change

    def __init__(self):
        self._character: Character | None = None
        self._character_height = 0.0
        self._faces = np.zeros((0, 3), np.int64)
        self._colours = np.zeros((0, 3))

    def load(self, character: Character) -> None:
        """Make ``character`` the one ``render`` draws."""
        offsets = np.cumsum([0] + [len(prim.positions) for prim in character.primitives])
        self._faces = np.vstack([prim.faces.astype(np.int64) + offset
                                 for prim, offset in zip(character.primitives, offsets)])
        self._colours = face_colours(character)
        self._character = character
        self._character_height = character.height()

    def open_character(self, path: str | Path) -> Character:
        """Read a .glb character (CharacterError says why not) and load it."""
        character = load_character(path)
        self.load(character)
        return character

    def render(self, spec: SceneSpec) -> dict:
        """The result dict of render.backends for ``spec`` (rgba, mask, depth, rgb_on_white,
        keypoints, face_box, camera)."""
        if self._character is None:
            raise RuntimeError("load a character before rendering")
        width, height = spec.resolution
        posed, vertices, camera_pose, fpx = pose_and_frame(self._character, spec)
        rgba, depth = rasterize(vertices, self._faces, self._colours, camera_pose, fpx, width, height)
        return character_result(rgba, depth, posed, camera_pose, fpx, spec, self._character_height)

    def close(self) -> None:
        """Drop the character; nothing else is held."""
        self._character = None
