"""What the Blender export scripts share (imported by them inside Blender's Python): the canonical
skeleton built as a Blender armature, and a pose keyed on it. Blender is z-up: our (x, y, z) is
Blender's (x, -z, y)."""
import bpy
from mathutils import Matrix, Vector

C = Matrix(((1, 0, 0), (0, 0, -1), (0, 1, 0)))  # ours -> Blender axes


def build_armature(name: str, rest: dict, parents: dict, names: dict):
    """An armature object in an empty scene, bones named ``names[joint]``, each pointing at its
    first child (leaves point up), rolls 0; returned in object mode."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    armature = bpy.data.armatures.new(name)
    rig = bpy.data.objects.new(name, armature)
    bpy.context.scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    children = {j: [c for c, p in parents.items() if p == j] for j in parents}
    for joint in parents:  # parents come first in the file
        bone = armature.edit_bones.new(names[joint])
        head = C @ Vector(rest[joint])
        tail = C @ Vector(rest[children[joint][0]]) if children[joint] else head + C @ Vector((0, 0.05, 0))
        if (tail - head).length < 1e-4:
            tail = head + Vector((0, 0, 0.05))
        bone.head, bone.tail, bone.roll = head, tail, 0.0
        if parents[joint]:
            bone.parent = armature.edit_bones[names[parents[joint]]]
    bpy.ops.object.mode_set(mode="OBJECT")
    return rig


def key_pose(rig, pose: dict, parents: dict, names: dict, frame: int) -> None:
    """Key ``pose`` (world rotations per joint, our frame) on the rig's bones at ``frame``."""
    for joint in parents:
        pose_bone = rig.pose.bones[names[joint]]
        rest_rotation = pose_bone.bone.matrix_local.to_3x3()
        world = C @ Matrix(pose.get(joint, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])) @ C.transposed()
        pose_bone.rotation_mode = "QUATERNION"
        pose_bone.rotation_quaternion = (rest_rotation.transposed() @ world @ rest_rotation).to_quaternion()
        pose_bone.keyframe_insert("rotation_quaternion", frame=frame)
