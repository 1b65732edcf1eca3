"""Renderer backends. Each takes a loaded character and a SceneSpec and returns a dict of arrays:
``rgba`` (H, W, 4) uint8, ``mask`` (H, W) bool (alpha > 0), ``depth`` (H, W) float32 (0 = background),
``rgb_on_white`` (H, W, 3) uint8 on a white-background spec (else None),
``keypoints`` (18, 3) OpenPose order [x, y, visible], ``face_box`` [x0, y0, x1, y1] and ``camera``.
``open_character(path)`` loads a character once (CharacterError says why it cannot) and
``render(spec)`` renders it; ``close()`` frees the backend. ``Renderer`` states this contract as
a typing.Protocol (``CharacterLoader`` and ``ObjectRenderer`` the parts only some backends have)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from render.backends.settings import BACKENDS

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from render.characters import Character
    from render.spec import SceneSpec


@runtime_checkable
class Renderer(Protocol):
    """What the pipeline uses of a character backend (render.stage.RenderStage, with any backend
    of BACKENDS): nothing else may be assumed of one. render.qa uses no backend object (it checks
    decoded records)."""

    name: str     # the backend's name, as in BACKENDS; written to each record's ``renderer``
    version: str  # the version of what draws the pixels (pyrender, bpy, ...); also in ``renderer``

    def open_character(self, path: str | Path) -> Character:
        """Read the character asset at ``path`` and make it the one ``render`` draws; returns the
        numpy model (its ``id`` and ``expressions`` are read). Raises CharacterError, whose message
        is the reject reason, for an asset that cannot be used."""

    def render(self, spec: SceneSpec) -> dict:
        """The current character posed, framed and lit as ``spec`` says, at ``spec.resolution``:
        the result dict described in this module's docstring (rgba, mask, depth, rgb_on_white,
        keypoints, face_box, camera). RuntimeError before a character is open."""

    def close(self) -> None:
        """Free the backend's resources (GL context, worker process); safe to call twice."""


@runtime_checkable
class CharacterLoader(Renderer, Protocol):
    """A Renderer that also draws an already loaded numpy Character (ray_jobs.bench's composite
    benchmark, with pyrender; the fake backend too). Blender imports from files and lacks it."""

    def load(self, character: Character) -> None:
        """Make ``character`` the one ``render`` draws; returns nothing."""


@runtime_checkable
class ObjectRenderer(Protocol):
    """What render.multiview.MultiviewStage uses of its backend (blender only): static mesh
    assets rendered from given cameras."""

    name: str
    version: str
    device: str | None  # the device the renderer found (e.g. Cycles' GPU or CPU); None before one starts

    def open_object(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """Import a mesh asset; returns its bounding box (min (3,), max (3,)) in pairforge's frame."""

    def render_view(self, camera_pose: np.ndarray, fpx: float, resolution: tuple[int, int], lights,
                    ambient: float) -> dict:
        """The open object from ``camera_pose`` (lights relative to the camera): a dict of
        ``rgba``, ``mask``, ``depth`` and ``camera``."""

    def close(self) -> None:
        """Free the backend's resources."""


def make_backend(name: str, blender=None, log_dir=None):
    """A backend by name (a Renderer; blender is also an ObjectRenderer); heavy imports happen
    here, not at package import. ``blender`` is the render config's BlenderSettings, ``log_dir``
    where Blender workers write their logs."""
    if name == "pyrender":
        from render.backends.pyrender_backend import PyrenderBackend
        return PyrenderBackend()
    if name == "blender":
        from render.backends.blender_backend import BlenderBackend
        return BlenderBackend(blender, log_dir)
    if name == "fake":
        from render.backends.fake_backend import FakeBackend
        return FakeBackend()
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
