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

from render.backends.common import FrontTriangles, character_result, pose_and_frame
from render.characters import Character, load_character
from render.spec import SceneSpec

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
    float32 along the view axis, 0 = background), covered as render.backends.common.FrontTriangles
    says."""
    triangles = FrontTriangles(vertices, faces, camera_pose, fpx, width, height)
    rgba = np.zeros((height, width, 4), np.uint8)
    depth = np.zeros((height, width), np.float32)
    pixel, z_hit, owner = triangles.cover((0, 0, width, height))
    keep = triangles.index
    # One shade per triangle: |cos| between its normal and the ray to its centroid.
    corners = vertices[faces[keep]].astype(np.float64)
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    view = camera_pose[:3, 3] - corners.mean(axis=1)
    cos = np.abs((normal * view).sum(1)) / np.maximum(np.linalg.norm(normal, axis=1) * np.linalg.norm(view, axis=1),
                                                       1e-12)
    shaded = np.clip(np.round(colours[keep] * (SHADE[0] + SHADE[1] * cos)[:, None]), 0, 255).astype(np.uint8)
    flat = rgba.reshape(-1, 4)
    flat[pixel, :3] = shaded[owner]
    flat[pixel, 3] = 255
    depth.reshape(-1)[pixel] = z_hit
    return rgba, depth


class FakeBackend:
    """A Renderer (render.backends) that rasterizes in numpy; see the module docstring."""
    name = "fake"
    version = "1"  # of this rasterizer: bump when its pixels change

    def __init__(self):
        self._character: Character | None = None
        self._colours = np.zeros((0, 3))

    def load(self, character: Character) -> None:
        """Make ``character`` the one ``render`` draws."""
        self._colours = face_colours(character)
        self._character = character

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
        rgba, depth = rasterize(vertices, self._character.stacked_faces()[0], self._colours, camera_pose, fpx, width, height)
        return character_result(rgba, depth, posed, self._character, camera_pose, fpx, spec)

    def close(self) -> None:
        """Drop the character; nothing else is held."""
        self._character = None
