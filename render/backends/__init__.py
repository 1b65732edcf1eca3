"""Renderer backends. Each takes a loaded character and a SceneSpec and returns a dict of arrays:
``rgba`` (H, W, 4) uint8, ``mask`` (H, W) bool (alpha > 0), ``depth`` (H, W) float32 (0 = background),
``keypoints`` (18, 3) OpenPose order [x, y, visible], ``face_box`` [x0, y0, x1, y1] and ``camera``."""
from __future__ import annotations

BACKENDS = ("pyrender",)


def make_backend(name: str):
    """A backend by name; heavy imports happen here, not at package import."""
    if name == "pyrender":
        from render.backends.pyrender_backend import PyrenderBackend
        return PyrenderBackend()
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
