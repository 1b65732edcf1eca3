"""Motions on the canonical skeleton: readers for BVH (numpy; any channel order and rest pose),
glTF clips (rigged characters, skeleton-only files and VRM Animation .vrma) and FBX (through the
Blender worker), a BVH writer, 18 built-in parametric clips so demos and tests need no download,
and unique poses: frames sampled from clips (sub-frames where a library is short of a target) with
near-duplicates dropped, as a pose table with motion and frame lineage.

Every reader goes through one path: the file's skeleton (node names, parents, rest matrices)
becomes a skeleton-only Character, whose rest alignment (render.characters) turns the file's posed
world rotations into canonical poses, so a T- or an A-rest file, any bone rolls and any naming
give the same poses.

Modules: base (Motion, MotionError, the skeleton-only Character), bvh, builtin (the clips), gltf
(glTF and .vrma clips, add_gltf_animation), fbx (through the Blender worker), library (load_motions
from folders, the motion manifest) and pose_table (unique poses, the pose table and its coverage
plot). This package re-exports their public names: import them from render.motions."""
from __future__ import annotations

from render.motions.base import Motion, MotionError
from render.motions.builtin import CLIPS, builtin_motion
from render.motions.bvh import read_bvh, write_bvh
from render.motions.fbx import read_fbx_motion
from render.motions.gltf import (
    VRM_EXPRESSIONS,
    VRM_HUMAN_BONES,
    add_gltf_animation,
    read_gltf_animations,
)
from render.motions.library import MOTION_SUFFIXES, load_motions, motion_manifest
from render.motions.pose_table import (
    COVERAGE_JOINTS,
    MAX_SUBSTEPS,
    coverage_plot,
    pose_library,
    pose_signature,
    read_pose_table,
    unique_poses,
    write_pose_table,
)

__all__ = [
    "CLIPS", "COVERAGE_JOINTS", "MAX_SUBSTEPS", "MOTION_SUFFIXES", "VRM_EXPRESSIONS",
    "VRM_HUMAN_BONES", "Motion", "MotionError", "add_gltf_animation", "builtin_motion", "coverage_plot",
    "load_motions", "motion_manifest", "pose_library", "pose_signature", "read_bvh", "read_fbx_motion",
    "read_gltf_animations", "read_pose_table", "unique_poses", "write_bvh", "write_pose_table",
]
