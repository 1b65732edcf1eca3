"""The Blender side of the blender backend: a long-lived process that owns bpy, imports one asset
at a time and renders it on request. Run by render.backends.blender_backend as
``python -m render.backends.blender_worker IN_FD OUT_FD SCRATCH_DIR``; its stdout/stderr (Blender's own
output) go to the per-worker log the client opened. The client never imports bpy (a process that
imported bpy cannot spawn children), and a hung or crashed Blender takes only this process down.

Coordinates: requests use pairforge's frame (glTF: +y up, metres); Blender's is +z up. Poses
arrive as skinning matrices per node name and are applied to the armature's pose bones, so
Blender deforms the mesh itself (its own skinning, shape keys and materials)."""
from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path

import numpy as np

from render.backends.settings import CHARACTER_SUFFIXES, ENGINES, OBJECT_SUFFIXES, WORKBENCH
from render.backends.wire import WorkerGone, receive, send

Y_UP_TO_Z_UP = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
GPU_KINDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")
BACKGROUND_DEPTH = 1e9  # Blender writes 1e10 where no surface is hit


class AssetError(ValueError):
    """An asset Blender cannot use; the message becomes the reject reason."""


def _matrix(bpy_matrix) -> np.ndarray:
    return np.array([list(row) for row in bpy_matrix], dtype=float)


class BlenderWorker:
    def __init__(self, bpy, scratch: Path):
        import mathutils
        self.bpy, self.mathutils = bpy, mathutils
        self.settings: dict = {}
        self.device = "CPU"
        self.scratch = scratch  # made and removed by the client, which outlives a killed worker
        self.armature = None
        self.bone_order: list = []

    # --- scene set-up -------------------------------------------------------------------------
    def op_configure(self, engine: str, samples: int, denoiser: str, denoising_prefilter: str, device: str) -> dict:
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
        self.settings = {"engine": engine, "samples": samples, "denoiser": denoiser,
                         "denoising_prefilter": denoising_prefilter, "device": device}
        self._reset()
        return {"device": self.device}

    def _reset(self) -> None:
        """An empty scene with our render settings, camera, world and depth output."""
        bpy = self.bpy
        bpy.ops.wm.read_factory_settings(use_empty=True)
        # Factory settings reset the preferences too: scripts inside assets (registered text
        # blocks, Python drivers) must never run.
        bpy.context.preferences.filepaths.use_scripts_auto_execute = False
        scene = bpy.context.scene
        self.armature, self.bone_order, self.shape_keys = None, [], []
        self._apply_engine(scene)
        scene.view_settings.view_transform = "Standard"
        scene.render.film_transparent = True
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGBA"
        scene.render.image_settings.color_depth = "8"
        scene.render.image_settings.compression = 0
        scene.render.resolution_percentage = 100
        camera = bpy.data.objects.new("pairforge_camera", bpy.data.cameras.new("pairforge_camera"))
        camera.data.sensor_fit, camera.data.sensor_height = "VERTICAL", 24.0
        camera.data.clip_start, camera.data.clip_end = 0.01, 1000.0
        scene.collection.objects.link(camera)
        scene.camera = camera
        scene.world = bpy.data.worlds.new("pairforge_world")
        scene.view_layers[0].use_pass_z = True
        self._depth_output(scene)
        self.lights = []

    def _apply_engine(self, scene) -> None:
        s = self.settings
        scene.render.engine = s["engine"]
        if s["engine"] == "CYCLES":
            scene.cycles.samples = s["samples"]
            scene.cycles.seed = 0
            scene.cycles.use_denoising = s["denoiser"] != "NONE"
            if scene.cycles.use_denoising:
                scene.cycles.denoiser = s["denoiser"]
                scene.cycles.denoising_prefilter = s["denoising_prefilter"]
            self.device = self._cycles_device(scene, s["device"])
        elif s["engine"] == "BLENDER_EEVEE":
            scene.eevee.taa_render_samples = s["samples"]
        else:
            scene.display.shading.light = WORKBENCH["light"]
            scene.display.shading.color_type = WORKBENCH["color_type"]
            scene.display.render_aa = WORKBENCH["render_aa"]

    def _cycles_device(self, scene, wanted: str) -> str:
        """GPU through the first backend that lists a device (OptiX before CUDA), else CPU."""
        if wanted != "cpu":
            prefs = self.bpy.context.preferences.addons["cycles"].preferences
            for kind in GPU_KINDS:
                try:
                    prefs.compute_device_type = kind
                except TypeError:  # not built into this Blender
                    continue
                prefs.get_devices()
                if any(d.type == kind for d in prefs.devices):
                    for d in prefs.devices:
                        d.use = d.type == kind
                    scene.cycles.device = "GPU"
                    return kind
            if wanted == "gpu":
                raise RuntimeError("blender.device=gpu but Cycles finds no OptiX/CUDA/HIP/oneAPI/Metal device")
        scene.cycles.device = "CPU"
        return "CPU"

    def _depth_output(self, scene) -> None:
        """The compositor writes the Depth pass (distance along the view axis) as a float EXR."""
        tree = self.bpy.data.node_groups.new("pairforge_compositor", "CompositorNodeTree")
        scene.compositing_node_group = tree
        layers = tree.nodes.new("CompositorNodeRLayers")
        output = tree.nodes.new("CompositorNodeOutputFile")
        output.format.media_type = "IMAGE"
        output.format.file_format = "OPEN_EXR"
        output.format.color_depth = "32"
        output.format.exr_codec = "NONE"
        output.file_output_items.new("FLOAT", "depth")
        output.directory = str(self.scratch / "depth")
        output.file_name = "pass_"
        tree.links.new(layers.outputs["Depth"], output.inputs["depth"])
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        tree.links.new(layers.outputs["Image"], tree.nodes.new("NodeGroupOutput").inputs[0])

    # --- assets -------------------------------------------------------------------------------
    def _import(self, path: Path, suffixes: tuple[str, ...]) -> list:
        bpy = self.bpy
        if not path.is_file():
            raise AssetError(f"{path.name}: no such file")
        suffix = path.suffix.lower()
        if suffix not in suffixes:
            raise AssetError(f"{path.name}: Blender imports {', '.join(suffixes)} here, not {suffix}")
        if path.stat().st_size == 0:
            raise AssetError(f"{path.name}: empty file")
        before = set(bpy.data.objects)
        try:
            if suffix in (".glb", ".gltf", ".vrm"):
                result = bpy.ops.import_scene.gltf(filepath=str(path))
            elif suffix == ".fbx":
                result = bpy.ops.import_scene.fbx(filepath=str(path))
            elif suffix == ".obj":
                result = bpy.ops.wm.obj_import(filepath=str(path))
            elif suffix == ".ply":
                result = bpy.ops.wm.ply_import(filepath=str(path))
            elif suffix == ".stl":
                result = bpy.ops.wm.stl_import(filepath=str(path))
            else:
                result = self._append_blend(path)
        except Exception as error:  # importers of untrusted files fail in every way: all are the asset's fault
            lines = str(error).strip().splitlines() or [type(error).__name__]
            raise AssetError(f"{path.name}: Blender cannot import it ({lines[-1]})") from None
        if "FINISHED" not in result:
            raise AssetError(f"{path.name}: Blender's importer gave up ({', '.join(result)})")
        new = [o for o in bpy.data.objects if o not in before]
        # Helpers never meant to be seen (bone display shapes, hidden collections) and the
        # asset's own cameras and lights go: the spec says what lights the scene.
        shapes = {b.custom_shape for o in new if o.type == "ARMATURE" for b in o.pose.bones if b.custom_shape}
        hidden = {c for c in bpy.data.collections if c.hide_render}
        hidden |= {child for c in hidden for child in c.children_recursive}
        drawn = [o for o in new if o.type not in ("CAMERA", "LIGHT") and o not in shapes and not o.hide_render
                 and not hidden.intersection(o.users_collection)]
        # The rigs deforming what is drawn, and its parents, stay even when hidden from render (riggers
        # often hide them): removing them would unskin or move the meshes. They are never drawn.
        needed = {m.object for o in drawn for m in o.modifiers if m.type == "ARMATURE" and m.object}
        for o in drawn + list(needed):
            while o.parent is not None:
                needed.add(o.parent)
                o = o.parent
        objects = drawn + [o for o in new if o in needed and o not in drawn]
        for o in new:
            if o not in objects:
                bpy.data.objects.remove(o)
            elif o not in drawn:
                o.hide_render = True
        if not any(o.type == "MESH" for o in drawn):
            raise AssetError(f"{path.name}: no mesh in the file")
        return objects

    def _append_blend(self, path: Path) -> set:
        """Objects appended from a .blend: data only, so text blocks registered to run on load and
        the file's own scene settings never come in (the preference above blocks Python drivers).
        Their collections come too, so that what the file hides from render stays hidden."""
        bpy = self.bpy
        with bpy.data.libraries.load(str(path), link=False) as (source, target):
            target.objects = list(source.objects)
            target.collections = list(source.collections)
        for obj in target.objects:
            if obj is not None and obj.type not in ("CAMERA", "LIGHT"):
                bpy.context.scene.collection.objects.link(obj)
        return {"FINISHED"}

    def op_load_character(self, path: str, export_glb: str | None) -> dict:
        self._reset()
        objects = self._import(Path(path), CHARACTER_SUFFIXES)
        armatures = [o for o in objects if o.type == "ARMATURE"]
        deformed = [o for o in objects if o.type == "MESH" and any(m.type == "ARMATURE" and m.object
                                                                   for m in o.modifiers)]
        if not armatures or not deformed:
            raise AssetError(f"{Path(path).name}: no armature deforming a mesh (a character needs a rig)")
        users = {m.object for o in deformed for m in o.modifiers if m.type == "ARMATURE" and m.object}
        self.armature = max(users, key=lambda a: len(a.data.bones))
        self.bone_order = self._parents_first(self.armature.data.bones)
        self.shape_keys = []
        for mesh in deformed:
            if mesh.data.shape_keys:
                for block in mesh.data.shape_keys.key_blocks[1:]:
                    block.value = 0.0  # neutral = every shape key at zero
                    self.shape_keys.append((mesh.data.shape_keys, block.name))
        if export_glb:
            self._export_glb(Path(export_glb))
        return {"bones": [b.name for b in self.bone_order], "shape_keys": sorted({n for _, n in self.shape_keys})}

    @staticmethod
    def _parents_first(bones) -> list:
        order, stack = [], [b for b in bones if b.parent is None]
        while stack:
            bone = stack.pop()
            order.append(bone)
            stack.extend(bone.children)
        return order

    def _export_glb(self, path: Path) -> None:
        """The imported rig as .glb, in the rest pose, for the numpy side of the backend (camera
        framing and the canonical skeleton) when the asset is not glTF already."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.glb")
        result = self.bpy.ops.export_scene.gltf(filepath=str(tmp), export_format="GLB", export_animations=False,
                                                export_skins=True, export_morph=True, export_yup=True,
                                                export_apply=False, export_cameras=False, export_lights=False)
        if "FINISHED" not in result:
            raise AssetError(f"{path.name}: Blender could not write the rig as glTF")
        os.replace(tmp, path)

    def op_load_object(self, path: str) -> dict:
        """A static mesh asset for multi-view renders; returns its bounds in pairforge's frame."""
        self._reset()
        objects = self._import(Path(path), OBJECT_SUFFIXES)
        for obj in objects:  # scans and .ply/.obj meshes often carry colour per vertex and no material
            if obj.type == "MESH" and not any(obj.data.materials) and obj.data.color_attributes:
                obj.data.materials.append(self._vertex_colour_material(obj.data.color_attributes.active_color_name))
        self.bpy.context.view_layer.update()
        to_ours = np.linalg.inv(Y_UP_TO_Z_UP)
        corners = [to_ours[:3, :3] @ (_matrix(o.matrix_world) @ np.r_[list(c), 1.0])[:3]
                   for o in objects if o.type == "MESH" for c in o.bound_box]
        lo, hi = np.min(corners, axis=0), np.max(corners, axis=0)
        return {"min": lo.tolist(), "max": hi.tolist()}

    def _vertex_colour_material(self, attribute: str):
        material = self.bpy.data.materials.new(f"pairforge_vertex_colour_{attribute}")
        nodes = material.node_tree.nodes
        colour = nodes.new("ShaderNodeVertexColor")
        colour.layer_name = attribute
        material.node_tree.links.new(colour.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
        return material

    # --- motions ------------------------------------------------------------------------------
    def op_load_motion(self, path: str) -> tuple[dict, dict]:
        """An animated armature (FBX, with or without a mesh) sampled at every frame of its action:
        bone names and parents (parents first), rest and posed world matrices in pairforge's frame.
        The numpy side (render.motions) maps and aligns them like any rig."""
        self._reset()
        bpy, file = self.bpy, Path(path)
        if not file.is_file():
            raise AssetError(f"{file.name}: no such file")
        if file.suffix.lower() != ".fbx" or file.stat().st_size == 0:
            raise AssetError(f"{file.name}: Blender reads motions from non-empty .fbx files here")
        before = set(bpy.data.objects)
        try:
            result = bpy.ops.import_scene.fbx(filepath=str(file), use_anim=True)
        except Exception as error:  # an importer of untrusted files fails in every way
            lines = str(error).strip().splitlines() or [type(error).__name__]
            raise AssetError(f"{file.name}: Blender cannot import it ({lines[-1]})") from None
        if "FINISHED" not in result:
            raise AssetError(f"{file.name}: Blender's importer gave up ({', '.join(result)})")
        armatures = [o for o in bpy.data.objects if o not in before and o.type == "ARMATURE"]
        if not armatures:
            raise AssetError(f"{file.name}: no skeleton in the file (a motion needs an armature)")
        animated = [a for a in armatures if a.animation_data and a.animation_data.action]
        if not animated:
            raise AssetError(f"{file.name}: empty animation (the armature has no action)")
        arm = max(animated, key=lambda a: len(a.data.bones))
        start, end = (int(round(f)) for f in arm.animation_data.action.frame_range)
        bones = self._parents_first(arm.data.bones)
        index = {b.name: i for i, b in enumerate(bones)}
        to_ours = np.linalg.inv(Y_UP_TO_Z_UP)
        scene = bpy.context.scene
        scene.frame_set(start)
        arm_world = to_ours @ _matrix(arm.matrix_world)
        rest = np.stack([arm_world @ _matrix(b.matrix_local) for b in bones])
        world = np.empty((end - start + 1, len(bones), 4, 4))
        for f in range(start, end + 1):
            scene.frame_set(f)
            arm_world = to_ours @ _matrix(arm.matrix_world)
            for b in bones:
                world[f - start, index[b.name]] = arm_world @ _matrix(arm.pose.bones[b.name].matrix)
        return ({"bones": [b.name for b in bones], "parents": [index[b.parent.name] if b.parent else -1 for b in bones],
                 "fps": scene.render.fps / scene.render.fps_base, "meshes": sum(o.type == "MESH" for o in
                                                                                bpy.data.objects if o not in before)},
                {"rest": rest, "world": world})

    # --- rendering ----------------------------------------------------------------------------
    def _pose(self, skin: dict[str, list[float]]) -> None:
        """Pose bones so that each bone's skinning matrix equals the requested one (pairforge's
        frame, converted): pose = X S X^-1 rest, for bones the request names; other bones follow
        their parents."""
        arm = self.armature
        to_armature = np.linalg.inv(_matrix(arm.matrix_world)) @ Y_UP_TO_Z_UP
        from_armature = np.linalg.inv(to_armature)
        posed: dict[str, np.ndarray] = {}
        for bone in self.bone_order:
            rest = _matrix(bone.matrix_local)
            parent = bone.parent
            if bone.name in skin:
                matrix = to_armature @ np.asarray(skin[bone.name], float).reshape(4, 4) @ from_armature @ rest
            elif parent is not None:
                matrix = posed[parent.name] @ np.linalg.inv(_matrix(parent.matrix_local)) @ rest
            else:
                matrix = rest
            posed[bone.name] = matrix
            relative_rest = rest if parent is None else np.linalg.inv(_matrix(parent.matrix_local)) @ rest
            parent_pose = np.eye(4) if parent is None else posed[parent.name]
            basis = np.linalg.inv(relative_rest) @ np.linalg.inv(parent_pose) @ matrix
            arm.pose.bones[bone.name].matrix_basis = self.mathutils.Matrix(basis.tolist())

    def _points(self, names: list[str]) -> dict[str, list[float]]:
        """World positions (pairforge's frame) of posed bone heads and of objects, by name."""
        to_ours = np.linalg.inv(Y_UP_TO_Z_UP)
        world = to_ours @ _matrix(self.armature.matrix_world)
        out = {}
        for name in names:
            bone = self.armature.pose.bones.get(name)
            if bone is not None:
                out[name] = (world @ np.r_[list(bone.head), 1.0])[:3].tolist()
            elif name in self.bpy.data.objects:
                out[name] = (to_ours @ np.r_[list(self.bpy.data.objects[name].matrix_world.translation), 1.0])[:3].tolist()
        return out

    def _view(self, camera: list, focal_px: float, resolution: list[int], lights: list[dict], ambient: float) -> None:
        scene = self.bpy.context.scene
        width, height = resolution
        scene.render.resolution_x, scene.render.resolution_y = width, height
        cam = scene.camera
        cam.data.lens = focal_px * cam.data.sensor_height / height
        camera_pose = np.asarray(camera, float)
        cam.matrix_world = self.mathutils.Matrix((Y_UP_TO_Z_UP @ camera_pose).tolist())
        while len(self.lights) < len(lights):
            data = self.bpy.data.lights.new(f"pairforge_sun{len(self.lights)}", "SUN")
            obj = self.bpy.data.objects.new(data.name, data)
            scene.collection.objects.link(obj)
            self.lights.append(obj)
        for obj, light in zip(self.lights, lights):  # a sun shines along its -z, as pyrender's does
            obj.hide_render = False
            obj.data.energy, obj.data.color = light["intensity"], light["colour"]
            obj.matrix_world = self.mathutils.Matrix((Y_UP_TO_Z_UP @ np.asarray(light["pose"], float)).tolist())
        for obj in self.lights[len(lights):]:
            obj.hide_render = True
        scene.world.color = (ambient, ambient, ambient)
        if scene.world.node_tree is not None:  # Cycles/EEVEE light from the world's Background node
            background = scene.world.node_tree.nodes.get("Background")
            if background is not None:
                background.inputs["Color"].default_value = (ambient, ambient, ambient, 1.0)

    def _render(self) -> dict[str, np.ndarray]:
        from PIL import Image
        bpy = self.bpy
        depth_dir = self.scratch / "depth"
        for old in depth_dir.glob("*.exr"):
            old.unlink()
        bpy.context.scene.render.filepath = str(self.scratch / "rgba.png")
        bpy.ops.render.render(write_still=True)
        with Image.open(self.scratch / "rgba.png") as image:
            rgba = np.asarray(image.convert("RGBA"))
        written = sorted(depth_dir.glob("*.exr"))
        if not written:
            raise RuntimeError("the compositor wrote no depth pass")
        image = bpy.data.images.load(str(written[0]))
        try:
            pixels = np.empty(len(image.pixels), np.float32)
            image.pixels.foreach_get(pixels)
            depth = pixels.reshape(image.size[1], image.size[0], -1)[::-1, :, 0]  # Blender rows go bottom-up
        finally:
            bpy.data.images.remove(image)
        depth = np.where(depth >= BACKGROUND_DEPTH, 0.0, depth).astype(np.float32)
        return {"rgba": rgba, "depth": np.ascontiguousarray(depth)}

    def op_render_character(self, skin: dict, shape_keys: dict, points: list[str], **view) -> tuple[dict, dict]:
        if self.armature is None:
            raise RuntimeError("load a character before rendering")
        self._pose(skin)
        for keys, name in self.shape_keys:
            keys.key_blocks[name].value = float(shape_keys.get(name, 0.0))
        self._view(**view)
        self.bpy.context.view_layer.update()
        return {"points": self._points(points)}, self._render()

    def op_render_view(self, **view) -> tuple[dict, dict]:
        self._view(**view)
        return {}, self._render()


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills this worker when the process that started it dies (a job killed
    by SIGKILL cannot stop its workers itself)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the call above (it may be pid 1 itself)
        os._exit(1)


def serve(in_fd: int, out_fd: int, scratch: str, parent_pid: int) -> int:
    _die_with_parent(parent_pid)
    import bpy
    return _loop(BlenderWorker(bpy, Path(scratch)), in_fd, out_fd, bpy.app.version_string)


def _loop(worker: BlenderWorker, in_fd: int, out_fd: int, version: str) -> int:
    send(out_fd, {"ok": True, "version": version})
    while True:
        try:
            header, _ = receive(in_fd)
        except WorkerGone:
            return 0
        op = header.get("op")
        if op == "quit":
            return 0
        handler = getattr(worker, f"op_{op}", None)
        try:
            if handler is None:
                raise ValueError(f"unknown request {op!r}")
            reply = handler(**header.get("args", {}))
            reply, arrays = reply if isinstance(reply, tuple) else (reply, {})
            send(out_fd, {"ok": True, **reply}, arrays)
        except AssetError as error:
            send(out_fd, {"ok": False, "asset_error": True, "error": str(error)})
        except Exception as error:  # reported to the client as the sample's reject reason
            traceback.print_exc()
            sys.stdout.flush()
            send(out_fd, {"ok": False, "error": f"{type(error).__name__}: {error}"})


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
