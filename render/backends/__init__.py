"""Renderer backends. Each takes a loaded character and a SceneSpec and returns a dict of arrays:
``rgba`` (H, W, 4) uint8, ``mask`` (H, W) bool (alpha > 0), ``depth`` (H, W) float32 (0 = background),
``keypoints`` (18, 3) OpenPose order [x, y, visible], ``face_box`` [x0, y0, x1, y1] and ``camera``.
``open_character(path)`` loads a character once (CharacterError says why it cannot) and
``render(spec)`` renders it; ``close()`` frees the backend."""
from __future__ import annotations

from render.backends.settings import BACKENDS


def make_backend(name: str, blender=None, log_dir=None):
    """A backend by name; heavy imports happen here, not at package import. ``blender`` is the
    render config's BlenderSettings, ``log_dir`` where Blender workers write their logs."""
    if name == "pyrender":
        from render.backends.pyrender_backend import PyrenderBackend
        return PyrenderBackend()
    if name == "blender":
        from render.backends.blender_backend import BlenderBackend
        return BlenderBackend(blender, log_dir)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
