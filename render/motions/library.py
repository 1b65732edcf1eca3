"""The motion library: every motion under the folders given (built-in clips and files in any format,
each read by its format's module), names made unique and rejects kept with their reasons, and the
manifest of what each motion gave to the pose table."""
from __future__ import annotations

from pathlib import Path

from render.motions.base import Motion, MotionError
from render.motions.builtin import CLIPS, builtin_motion
from render.motions.bvh import read_bvh
from render.motions.fbx import fbx_backend, read_fbx_motion
from render.motions.gltf import read_gltf_animations

MOTION_SUFFIXES = (".bvh", ".fbx", ".glb", ".vrma", ".vrm")


def load_motions(folders, keep_root: bool = False) -> tuple[list[Motion], list[str]]:
    """Motions from ``folders`` (one or a list): "builtin" (or None) is the built-in clips, a
    folder is every .bvh, .fbx, animated .glb/.vrm and .vrma under it. Returns the motions (each
    with its ``source``; names made unique) and the reasons of the files rejected, which never stop
    the others. ``keep_root``: keep the hips' translation (``Motion.root``), else drop it."""
    if folders is None or isinstance(folders, (str, Path)):
        folders = [folders]
    motions, rejects, backend = [], [], None
    try:
        for folder in folders:
            if folder in (None, "builtin"):
                for name in CLIPS:
                    motion = builtin_motion(name)
                    motion.source = "builtin"
                    motions.append(motion)
                continue
            if not Path(folder).is_dir():
                rejects.append(f"{folder}: no such folder")
                continue
            for path in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in MOTION_SUFFIXES):
                try:
                    if path.suffix.lower() == ".bvh":
                        found = [read_bvh(path)]
                    elif path.suffix.lower() == ".fbx":
                        if backend is None:
                            backend = fbx_backend()
                        found = [read_fbx_motion(path, backend)]
                    else:
                        found = read_gltf_animations(path)
                except MotionError as error:
                    rejects.append(str(error))
                    continue
                except Exception as error:  # Blender missing or failing: the file's reject, not the run's end
                    if path.suffix.lower() != ".fbx":
                        raise
                    rejects.append(f"{path.name}: FBX needs the Blender worker ({type(error).__name__}: {error})")
                    continue
                for motion in found:
                    motion.source = str(path)
                motions += found
    finally:
        if backend is not None:
            backend.close()
    seen: dict[str, int] = {}
    for motion in motions:
        seen[motion.name] = seen.get(motion.name, 0) + 1
        if seen[motion.name] > 1:
            motion.name = f"{motion.name}-{seen[motion.name]}"
        if not keep_root:
            motion.root = None
    return motions, rejects


def motion_manifest(motions: list[Motion], rows: list[dict]) -> dict:
    """The motion library: each motion's source, frames, frame rate and unique poses kept."""
    kept: dict[str, int] = {}
    for row in rows:
        kept[row["motion"]] = kept.get(row["motion"], 0) + 1
    return {"motions": [{"name": m.name, "source": m.source, "frames": len(m.poses),
                         "fps": round(1.0 / m.frame_time, 3), "unique_poses": kept.get(m.name, 0)} for m in motions],
            "unique_poses": len(rows)}
