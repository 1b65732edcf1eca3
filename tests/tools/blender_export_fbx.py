"""Run with the project's Python (bpy installed): builds the canonical skeleton as a Blender
armature with Mixamo's bone names (``mixamorig:Hips`` ...), optionally a mesh skinned to it, keys
the poses given in a JSON file (world rotations per joint, pairforge's y-up frame) and a root
motion on the hips, and writes an FBX with Blender's own exporter. Used by the motion-format tests."""
import json
import sys

import bpy
from blender_armature import C, build_armature, key_pose
from mathutils import Matrix, Vector

spec = json.loads(open(sys.argv[1]).read())
rest, parents, poses, out = spec["rest"], spec["parents"], spec["poses"], spec["out"]
names, root = spec["names"], spec.get("root")
rig = build_armature("Armature", rest, parents, names)
bpy.context.scene.render.fps = int(spec.get("fps", 30))
if spec.get("mesh"):  # a box per bone, each rigidly weighted to its bone
    import bmesh
    mesh = bpy.data.meshes.new("Body")
    body = bpy.data.objects.new("Body", mesh)
    bpy.context.scene.collection.objects.link(body)
    bm = bmesh.new()
    groups = []
    for joint in parents:
        before = len(bm.verts)
        bmesh.ops.create_cube(bm, size=0.04, matrix=Matrix.Translation(C @ Vector(rest[joint])))
        groups.append((names[joint], list(range(before, len(bm.verts)))))
    bm.to_mesh(mesh)
    bm.free()
    for name, verts in groups:
        body.vertex_groups.new(name=name).add(verts, 1.0, "REPLACE")
    body.parent = rig
    body.modifiers.new("Armature", "ARMATURE").object = rig
bpy.context.view_layer.objects.active = rig
bpy.ops.object.mode_set(mode="POSE")
for pose_bone in rig.pose.bones:  # frame 0 holds the rest: an FBX without a skin stores no bind pose,
    pose_bone.rotation_mode = "QUATERNION"  # so the importer takes the bones' rest from the pose at export
    pose_bone.keyframe_insert("rotation_quaternion", frame=0)
    pose_bone.keyframe_insert("location", frame=0)
for frame, pose in enumerate(poses, start=1):
    key_pose(rig, pose, parents, names, frame)
    if root:  # root motion: the hips travel (a bone's location is in its rest frame)
        hips = rig.pose.bones[names["hips"]]
        hips.location = hips.bone.matrix_local.to_3x3().transposed() @ (C @ Vector(root[frame - 1]))
        hips.keyframe_insert("location", frame=frame)
bpy.ops.object.mode_set(mode="OBJECT")
bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, len(poses)
bpy.context.scene.frame_set(0)
bpy.ops.export_scene.fbx(filepath=out, object_types={"ARMATURE", "MESH"} if spec.get("mesh") else {"ARMATURE"},
                         add_leaf_bones=False, bake_anim=True, bake_anim_use_all_actions=False,
                         bake_anim_use_nla_strips=False, bake_anim_simplify_factor=0.0)
