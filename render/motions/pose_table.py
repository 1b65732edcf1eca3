"""Unique poses: frames sampled from motions (sub-frames where a library is short of a target)
with near-duplicates dropped, as a pose table with motion and frame lineage; the table's jsonl
file and its joint-angle coverage plot."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from render.geometry import euler_xyz
from render.motions.base import Motion
from render.poses import Pose, posed_positions
from render.skeleton import JOINTS, Proportions, rest_positions


def pose_signature(pose: Pose, rest: dict[str, np.ndarray]) -> np.ndarray:
    """Joint positions relative to the hips, in heights: what two poses are compared by."""
    positions = posed_positions(pose, rest)
    hips = positions["hips"]
    return np.concatenate([positions[j] - hips for j in JOINTS]) / Proportions().height


def _slerp(q0: np.ndarray, q1: np.ndarray, w: float) -> np.ndarray:
    q1 = q1 if q0 @ q1 >= 0 else -q1
    q = (1 - w) * q0 + w * q1  # normalised lerp: close to slerp for the small steps between keys
    return q / np.linalg.norm(q)


def _blend(a: Pose, b: Pose, w: float) -> Pose:
    """A pose between two frames: each joint's rotation interpolated along the shorter arc."""
    from render.geometry import matrix_to_quaternion, quaternion_to_matrix, rotation_xyz
    out = {}
    for joint in set(a) | set(b):
        qa = matrix_to_quaternion(rotation_xyz(a.get(joint, (0, 0, 0))))
        qb = matrix_to_quaternion(rotation_xyz(b.get(joint, (0, 0, 0))))
        angles = euler_xyz(quaternion_to_matrix(_slerp(qa, qb, w)))
        if np.abs(angles).max() > 1e-4:
            out[joint] = [round(float(x), 4) for x in angles]
    return out


def _candidates(motion: Motion, every: int, substeps: int):
    """(frame, pose) to sample from a motion: every ``every``-th frame, and ``substeps - 1``
    interpolated sub-frames between it and the next frame (frame is then fractional)."""
    for frame in range(0, len(motion.poses), every):
        yield frame, motion.poses[frame]
        if frame + 1 < len(motion.poses):
            for k in range(1, substeps):
                yield round(frame + k / substeps, 4), _blend(motion.poses[frame], motion.poses[frame + 1], k / substeps)


def unique_poses(motions: list[Motion], every: int = 1, threshold: float = 0.015, substeps: int = 1) -> list[dict]:
    """Frames (every ``every``-th, with ``substeps - 1`` interpolated sub-frames after each) of all
    motions, dropping any whose joints all lie within ``threshold`` heights (mean distance) of a
    pose already kept. Rows keep motion and frame (and the frame's expression and root, if any)."""
    rest = rest_positions(Proportions())
    kept, signatures, count = [], np.empty((256, len(JOINTS), 3)), 0
    for motion in motions:
        for frame, pose in _candidates(motion, every, substeps):
            signature = pose_signature(pose, rest).reshape(len(JOINTS), 3)
            if count and (np.linalg.norm(signatures[:count] - signature, axis=2).mean(1) < threshold).any():
                continue
            if count == len(signatures):
                signatures = np.concatenate([signatures, np.empty_like(signatures)])
            signatures[count] = signature
            count += 1
            row = {"pose_id": len(kept), "motion": motion.name, "frame": frame, "pose": pose}
            nearest = min(int(round(frame)), len(motion.poses) - 1)
            if motion.expressions and motion.expressions[nearest]:
                row["expression"] = motion.expressions[nearest]
            if motion.root is not None:
                row["root"] = [round(float(x), 5) for x in motion.root[nearest]]
            kept.append(row)
    return kept


MAX_SUBSTEPS = 16


def pose_library(motions: list[Motion], target: int = 0, every: int = 1, threshold: float = 0.015
                 ) -> tuple[list[dict], dict]:
    """Unique poses across ``motions`` towards ``target`` (0: all there are at every frame). While
    short of the target, frames are sampled more densely (2, 4, ... up to MAX_SUBSTEPS sub-frames
    interpolated between frames) until the target is reached or denser sampling stops adding
    poses; above it, an even spread of ``target`` rows is kept (renumbered). The report says how
    dense the sampling was and whether the target was reached, and if not, why."""
    substeps = 1
    rows = unique_poses(motions, every, threshold, substeps)
    saturated = False
    while target and len(rows) < target and substeps < MAX_SUBSTEPS:
        denser = unique_poses(motions, every, threshold, substeps * 2)
        substeps *= 2
        if len(denser) < len(rows) * 1.02 + 1:  # interpolation adds (almost) nothing new
            rows, saturated = max(rows, denser, key=len), True
            break
        rows = denser
    found = len(rows)
    if target and len(rows) > target:
        keep = np.unique(np.linspace(0, len(rows) - 1, target).round().astype(int))
        rows = [{**rows[i], "pose_id": n} for n, i in enumerate(keep)]
    report = {"target": target, "found": found, "kept": len(rows), "substeps": substeps, "threshold": threshold,
              "reached": not target or found >= target}
    if not report["reached"]:
        why = "denser sampling adds no new poses" if saturated else f"sampling at {substeps} sub-frames per frame"
        report["reason"] = (f"the motions give {found} unique poses at threshold {threshold} ({why}), short of the "
                            f"target {target}: add motions or lower --threshold")
    return rows, report


def write_pose_table(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    return path


def read_pose_table(path: str | Path) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if [r["pose_id"] for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: pose ids must run 0..{len(rows) - 1} in order")
    return rows


COVERAGE_JOINTS = ("spine", "neck", "head", "left_upper_arm", "left_lower_arm", "right_upper_arm", "right_lower_arm",
                   "left_upper_leg", "left_lower_leg", "right_upper_leg", "right_lower_leg", "hips")


def coverage_plot(rows: list[dict], path: str | Path, bins: int = 24) -> Path:
    """Joint-angle coverage of a pose table: per joint, histograms of its x, y and z angles."""
    from PIL import Image, ImageDraw

    panel_w, panel_h, pad = 240, 110, 8
    cols = 3
    grid_rows = -(-len(COVERAGE_JOINTS) // cols)
    image = Image.new("RGB", (cols * (panel_w + pad) + pad, grid_rows * (panel_h + pad) + pad + 20), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, 4), f"joint-angle coverage of {len(rows)} poses (x red, y green, z blue; -180..180 deg)",
              fill="black")
    edges = np.linspace(-180, 180, bins + 1)
    for n, joint in enumerate(COVERAGE_JOINTS):
        x0 = pad + (n % cols) * (panel_w + pad)
        y0 = 20 + pad + (n // cols) * (panel_h + pad)
        draw.rectangle((x0, y0, x0 + panel_w, y0 + panel_h), outline=(180, 180, 180))
        draw.text((x0 + 4, y0 + 2), joint, fill="black")
        angles = np.array([row["pose"].get(joint, (0, 0, 0)) for row in rows], float).reshape(-1, 3)
        for axis, colour in enumerate(((220, 50, 50), (40, 160, 60), (50, 80, 220))):
            counts, _ = np.histogram(angles[:, axis], edges)
            top = max(counts.max(), 1)
            bar = panel_w / bins / 3
            for b, count in enumerate(counts):
                if count:
                    left = x0 + b * panel_w / bins + axis * bar
                    height = (panel_h - 16) * count / top
                    draw.rectangle((left, y0 + panel_h - height, left + bar - 1, y0 + panel_h), fill=colour)
    path = Path(path)
    image.save(path)
    return path
