"""Run with the project's Python (bpy installed): python blender_make_assets.py SPEC.json.
Imports a .glb character with Blender and saves it as the asset kinds the blender backend reads:
.fbx, .blend, a .blend whose rig and its parent empty are hidden from render (as riggers often
leave them) and which keeps a reference cube in a collection hidden from render, and a .blend carrying a text block registered to run on load and a Python driver
(they would write the files ``marker`` and ``driver_marker`` if they ever ran). Used by the blender backend's tests."""
import json
import sys

import bpy

spec = json.loads(open(sys.argv[1]).read())
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=spec["glb"])
for helper in bpy.data.collections["glTF_not_exported"].objects:  # the importer's bone display shape
    bpy.data.objects.remove(helper)
if spec.get("fbx"):
    bpy.ops.export_scene.fbx(filepath=spec["fbx"], add_leaf_bones=False, bake_anim=False, path_mode="COPY",
                             embed_textures=True)
if spec.get("blend"):
    bpy.ops.wm.save_as_mainfile(filepath=spec["blend"])
if spec.get("hidden_rig_blend"):
    armature = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    root = bpy.data.objects.new("rig_root", None)
    bpy.context.scene.collection.objects.link(root)
    armature.parent = root
    armature.hide_render = root.hide_render = True
    # A reference mesh kept in a collection hidden from render, over the character's body.
    reference = bpy.data.collections.new("reference")
    reference.hide_render = True
    bpy.context.scene.collection.children.link(reference)
    bpy.ops.mesh.primitive_cube_add(size=0.6, location=(0.0, 0.0, 1.0))
    cube = bpy.context.active_object
    for collection in list(cube.users_collection):
        collection.objects.unlink(cube)
    reference.objects.link(cube)
    bpy.ops.wm.save_as_mainfile(filepath=spec["hidden_rig_blend"])
    bpy.data.objects.remove(cube)
    bpy.data.collections.remove(reference)
    armature.parent = None
    armature.hide_render = False
    bpy.data.objects.remove(root)
if spec.get("trojan_blend"):
    text = bpy.data.texts.new("on_load.py")
    text.write(f"open({spec['marker']!r}, 'w').write('the script inside the asset ran')\n")
    text.use_module = True  # registered: Blender runs it when the file is opened with scripts trusted
    # A Python driver on the character's mesh: Blender evaluates it whenever the object updates,
    # if Python auto-execution is allowed.
    mesh = next(o for o in bpy.data.objects if o.type == "MESH" and o.users_collection)
    mesh["trap"] = 0.0
    driver = mesh.driver_add('["trap"]').driver
    driver.type = "SCRIPTED"
    driver.expression = f"len(open({spec['driver_marker']!r}, 'w').write('the driver ran'))"
    bpy.ops.wm.save_as_mainfile(filepath=spec["trojan_blend"])
