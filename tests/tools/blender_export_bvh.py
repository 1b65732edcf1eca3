"""Run with the project's Python (bpy installed): builds the canonical skeleton as a Blender
armature, keys the poses given in a JSON file on it, and writes a BVH with Blender's own
exporter. Used by the motion round-trip test."""
import json
import sys

import bpy
from blender_armature import build_armature, key_pose

spec = json.loads(open(sys.argv[1]).read())
rest, parents, poses, out = spec["rest"], spec["parents"], spec["poses"], spec["out"]
names = {joint: joint for joint in parents}
rig = build_armature("skeleton", rest, parents, names)
bpy.ops.object.mode_set(mode="POSE")
for frame, pose in enumerate(poses, start=1):
    key_pose(rig, pose, parents, names, frame)
bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, len(poses)
bpy.ops.export_anim.bvh(filepath=out, frame_start=1, frame_end=len(poses), root_transform_only=True)
