"""FBX, which only Blender reads: the file is imported by bpy in a Blender worker process (never in
this one) and its bones' rest and posed matrices come back to be aligned like any rig."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from render.bonemap import UnmappableRig, map_bones
from render.motions.base import Motion, MotionError, skeleton_character


def read_fbx_motion(path: str | Path, backend=None) -> Motion:
    """An animated FBX (Mixamo's ``mixamorig:`` rigs and others, with or without a mesh) -> a
    canonical Motion, read by bpy's FBX importer in a Blender worker process (``backend``, a
    BlenderBackend; one is started and closed here if not given). The hips' translation is kept
    in ``root``; the poses are root-relative."""
    from render.backends.blender_backend import BlenderBackend
    from render.characters import CharacterError
    path = Path(path)
    own = backend is None
    if own:
        from render.backends.settings import BlenderSettings
        backend = BlenderBackend(BlenderSettings(engine="BLENDER_WORKBENCH", device="cpu"))
    try:
        reply = backend.read_motion(path)
    except CharacterError as error:
        raise MotionError(str(error).split(" (log ")[0]) from None
    finally:
        if own:
            backend.close()
    names, parents = list(reply["bones"]), np.asarray(reply["parents"])
    rest, world = np.asarray(reply["rest"], float), np.asarray(reply["world"], float)
    if not len(world):
        raise MotionError(f"{path.name}: empty animation (no frames)")
    try:
        mapping = map_bones(names)
    except UnmappableRig as error:
        raise MotionError(f"{path.name}: not a humanoid skeleton ({error})") from None
    local = np.stack([r if p < 0 else np.linalg.inv(rest[p]) @ r for r, p in zip(rest, parents)])
    skeleton = skeleton_character(path.stem, names, parents, local, {j: names.index(b) for j, b in mapping.items()})
    poses = [skeleton.pose_from_world(w) for w in world]
    fps = float(reply.get("fps") or 30.0)
    return Motion(path.stem, 1.0 / fps, poses, root=world[:, names.index(mapping["hips"]), :3, 3].copy())


def fbx_backend():
    from render.backends.blender_backend import BlenderBackend
    from render.backends.settings import BlenderSettings
    return BlenderBackend(BlenderSettings(engine="BLENDER_WORKBENCH", device="cpu", recycle_after=1000))
