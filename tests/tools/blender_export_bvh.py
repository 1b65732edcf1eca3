"""Run with the project's Python (bpy installed): builds the canonical skeleton as a Blender
armature (Blender is z-up: our (x, y, z) is Blender's (x, -z, y)), keys the poses given in a JSON
file on it, and writes a BVH with Blender's own exporter. Used by the motion round-trip test."""
import json
import sys

import bpy
from mathutils import Matrix, Vector

spec = json.loads(open(sys.argv[1]).read())
rest, parents, poses, out = spec["rest"], spec["parents"], spec["poses"], spec["out"]
C = Matrix(((1, 0, 0), (0, 0, -1), (0, 1, 0)))  # ours -> Blender axes

bpy.ops.wm.read_factory_settings(use_empty=True)
armature = bpy.data.armatures.new("skeleton")
rig = bpy.data.objects.new("skeleton", armature)
bpy.context.scene.collection.objects.link(rig)
bpy.context.view_layer.objects.active = rig
bpy.ops.object.mode_set(mode="EDIT")
children = {j: [c for c, p in parents.items() if p == j] for j in parents}
for joint in parents:  # parents come first in the file
    bone = armature.edit_bones.new(joint)
    head = C @ Vector(rest[joint])
    tail = C @ Vector(rest[children[joint][0]]) if children[joint] else head + C @ Vector((0, 0.05, 0))
    if (tail - head).length < 1e-4:
        tail = head + Vector((0, 0, 0.05))
    bone.head, bone.tail, bone.roll = head, tail, 0.0
    if parents[joint]:
        bone.parent = armature.edit_bones[parents[joint]]
bpy.ops.object.mode_set(mode="POSE")
for frame, pose in enumerate(poses, start=1):
    for joint in parents:
        pose_bone = rig.pose.bones[joint]
        rest_rotation = pose_bone.bone.matrix_local.to_3x3()
        world = C @ Matrix(pose.get(joint, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])) @ C.transposed()
        pose_bone.rotation_mode = "QUATERNION"
        pose_bone.rotation_quaternion = (rest_rotation.transposed() @ world @ rest_rotation).to_quaternion()
        pose_bone.keyframe_insert("rotation_quaternion", frame=frame)
bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, len(poses)
bpy.ops.export_anim.bvh(filepath=out, frame_start=1, frame_end=len(poses), root_transform_only=True)
