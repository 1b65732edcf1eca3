"""The light renderer: numpy linear-blend skinning into pyrender on EGL (Mesa llvmpipe on CPU).
One character is loaded at a time; between poses only the vertex buffers are rewritten in place
(glBufferSubData), which is several times cheaper than rebuilding the mesh."""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
from importlib import metadata

import numpy as np

from render.backends.common import character_result, light_pose, pose_and_frame
from render.characters import Character, PosedCharacter, load_character
from render.geometry import project
from render.spec import SceneSpec


def _load_triton_first() -> None:
    """Mesa's llvmpipe (the CPU OpenGL behind EGL here) and triton (torch's GPU compiler, which
    ``torch._dynamo`` imports, e.g. when transformers generates) each bring their own LLVM: once
    llvmpipe has run in a process, importing triton crashes it (SIGSEGV); in the other order both
    work. So where triton is installed it is imported before the first GL context (~0.1 s)."""
    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        try:
            importlib.import_module("triton")
        except Exception:  # a broken triton is torch's concern, not the renderer's
            pass


def import_pyrender():
    """pyrender and OpenGL's GL module, on EGL (headless); the error names the extra to install."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    _load_triton_first()
    if not hasattr(np, "infty"):  # pyrender 0.1.45 still spells it so; numpy 2 removed it
        np.infty = np.inf
    try:
        import pyrender
        from OpenGL import GL
    except ImportError as error:
        raise ImportError(f"the pyrender backend needs the preview extra: pip install 'pairforge[preview]' "
                          f"({error})") from error
    return pyrender, GL


# pyrender's mesh.frag after its own preprocessing: from the point-light loop to the ambient term
# (both loops stay in the code even when no such light exists, and cost a third of a render).
_POINT_AND_SPOT_LOOPS = re.compile(r"\n    for \(int i = 0; i < n_point_lights; i\+\+\) \{.*?"
                                   r"(?=\n    color\.xyz \+= base_color\.xyz \* ambient_light;)", re.DOTALL)


@functools.cache
def _program_cache_class(pyrender):
    """pyrender's shader cache whose mesh fragment shader drops the point- and spot-light loops,
    which this backend's scenes never have (a SceneSpec has directional lights only). The same
    pixels as pyrender's shader, and on llvmpipe about a third less time a render (measured in
    docs/benchmarks.md). A pyrender whose shader text differs keeps its shader unchanged."""
    base = pyrender.shader_program

    class DirectionalLightsProgram(base.ShaderProgram):
        def _load(self, shader_filename):
            text = super()._load(shader_filename)
            return _POINT_AND_SPOT_LOOPS.sub("", text, count=1) if shader_filename.endswith("mesh.frag") else text

    class ProgramCache(base.ShaderProgramCache):
        def get_program(self, vertex_shader, fragment_shader, geometry_shader=None, defines=None):
            program = super().get_program(vertex_shader, fragment_shader, geometry_shader, defines)
            if not program._in_context():  # not compiled yet: it compiles from our _load
                program.__class__ = DirectionalLightsProgram
            return program

    return ProgramCache


@functools.cache
def _windowed_renderer_class(pyrender):
    """pyrender's Renderer whose framebuffer read-back covers only ``window`` (x0, y0, x1, y1 in
    image pixels): it resolves, reads and linearizes the window's pixels and leaves the rest of the
    frame zero. The backend swaps an OffscreenRenderer's renderer to this class (no per-instance
    patching, so no reference cycle that would free a renderer at a random later moment)."""
    from OpenGL import GL as gl

    class WindowedRenderer(pyrender.renderer.Renderer):
        window: tuple[int, int, int, int] | None = None  # None: the whole frame

        def _read_main_framebuffer(self, scene, flags):
            width, height = self._main_fb_dims
            x0, y0, x1, y1 = self.window or (0, 0, width, height)
            w, h, gl_y = x1 - x0, y1 - y0, height - y1  # GL counts rows from the bottom
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, self._main_fb_ms)
            gl.glBindFramebuffer(gl.GL_DRAW_FRAMEBUFFER, self._main_fb)
            for buffer, method in ((gl.GL_COLOR_BUFFER_BIT, gl.GL_LINEAR), (gl.GL_DEPTH_BUFFER_BIT, gl.GL_NEAREST)):
                gl.glBlitFramebuffer(x0, gl_y, x1, gl_y + h, x0, gl_y, x1, gl_y + h, buffer, method)
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, self._main_fb)
            raw = np.frombuffer(gl.glReadPixels(x0, gl_y, w, h, gl.GL_DEPTH_COMPONENT, gl.GL_FLOAT),
                                np.float32).reshape(h, w)[::-1]
            depth = np.zeros((height, width), np.float32)
            drawn = raw < 1.0
            near, far = scene.main_camera_node.camera.znear, scene.main_camera_node.camera.zfar
            ndc = 2.0 * raw[drawn] - 1.0  # OpenGL depth -> metres along the view axis, as pyrender does
            depth[y0:y1, x0:x1][drawn] = 2.0 * near * far / (far + near - ndc * (far - near))
            if flags & pyrender.RenderFlags.DEPTH_ONLY:
                return depth
            colour = np.zeros((height, width, 4), np.uint8)
            pixels = gl.glReadPixels(x0, gl_y, w, h, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE)
            colour[y0:y1, x0:x1] = np.frombuffer(pixels, np.uint8).reshape(h, w, 4)[::-1]
            return colour, depth

    return WindowedRenderer


@functools.cache
def _ordered_node_class(pyrender):
    """A pyrender Node that hashes by its slot number. pyrender keeps lights in a set and binds them
    in the set's order, which for plain nodes follows memory addresses: the shader then sums the
    lights in a different order in each renderer, and a pixel at a rounding edge flips by 1/255.
    Small distinct hashes make the set iterate in slot order, in every renderer."""
    class OrderedNode(pyrender.Node):
        def __init__(self, slot: int, **kwargs):
            super().__init__(**kwargs)
            self.slot = slot

        def __hash__(self):
            return self.slot

    return OrderedNode


def _straight_alpha(rgba: np.ndarray) -> None:
    """The MSAA resolve averages colour with the transparent-black background, so edge pixels come
    out premultiplied; PNG means straight alpha. Divide the colour of partly covered pixels by
    their coverage (in place)."""
    alpha = rgba[..., 3]
    edge = (alpha > 0) & (alpha < 255)
    if edge.any():
        a = alpha[edge].astype(np.float32)[:, None]
        rgba[edge, :3] = np.minimum(255.0, rgba[edge, :3] * (255.0 / a) + 0.5).astype(np.uint8)


def _gl_uv(uv: np.ndarray) -> np.ndarray:
    """glTF puts the texture origin top-left, OpenGL bottom-left."""
    return np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1).astype(np.float32)


class PyrenderBackend:
    name = "pyrender"
    crop_to_character = True  # draw only the character's pixel box (see _set_window); False: the whole frame

    def __init__(self):
        self._pyrender, self._gl = import_pyrender()
        self.version = metadata.version("pyrender")
        self._renderer = None
        self._scene = None
        self._character: Character | None = None
        self._parts: list[tuple] = []  # (pyrender primitive, index of the character's primitive)

    def load(self, character: Character) -> None:
        """Upload ``character``'s meshes; the next renders pose it."""
        pr = self._pyrender
        self._scene = pr.Scene(bg_color=(0, 0, 0, 0), ambient_light=(0.3, 0.3, 0.3))
        self._character = character
        self._parts = []
        primitives = []
        for index, prim in enumerate(character.primitives):
            if prim.texture is not None:
                texture = pr.Texture(source=prim.texture, source_channels="RGBA",
                                     sampler=pr.Sampler(magFilter=9729, minFilter=9987, wrapS=33071, wrapT=33071))
                material = pr.MetallicRoughnessMaterial(baseColorTexture=texture, metallicFactor=0.0,
                                                        roughnessFactor=0.8)
            else:
                material = pr.MetallicRoughnessMaterial(baseColorFactor=prim.colour, metallicFactor=0.0,
                                                        roughnessFactor=0.8)
            part = pr.Primitive(positions=prim.positions, normals=prim.normals,
                                texcoord_0=None if prim.uvs is None else _gl_uv(prim.uvs), indices=prim.faces,
                                material=material)
            self._parts.append((part, index))
            primitives.append(part)
        # One mesh node, drawn in list order: pyrender sorts nodes by distance from the camera, and
        # nodes at the same place would be drawn in set order, which changes coplanar pixels run to run.
        self._scene.add(pr.Mesh(primitives=primitives))
        self._camera_node = None
        self._light_nodes = []

    def open_character(self, path) -> Character:
        """Read a .glb character (CharacterError says why not) and load it."""
        character = load_character(path)
        self.load(character)
        return character

    def _upload(self, posed: PosedCharacter) -> None:
        gl = self._gl
        for part, index in self._parts:
            positions, normals = posed.positions[index], posed.normals[index]
            if part._vaid is None:  # not on the GPU yet: the first render uploads these
                part.positions, part.normals = positions, normals
                continue
            columns = [positions, normals] + ([part.texcoord_0] if part.texcoord_0 is not None else [])
            data = np.ascontiguousarray(np.hstack(columns), dtype=np.float32)
            gl.glBindBuffer(gl.GL_ARRAY_BUFFER, part._buffers[0])
            gl.glBufferSubData(gl.GL_ARRAY_BUFFER, 0, data.nbytes, data)

    def _set_view(self, spec: SceneSpec, camera_pose: np.ndarray, fpx: float) -> None:
        """Point the camera and lights; nodes are kept and updated in place, since adding and
        removing nodes every frame costs pyrender ~10 ms."""
        pr = self._pyrender
        width, height = spec.resolution
        if self._camera_node is None:
            self._camera_node = self._scene.add(pr.IntrinsicsCamera(fx=1, fy=1, cx=0, cy=0, znear=0.01, zfar=1000.0))
        camera = self._camera_node.camera
        camera.fx = camera.fy = fpx
        camera.cx, camera.cy = width / 2, height / 2
        self._scene.set_pose(self._camera_node, camera_pose)
        while len(self._light_nodes) < len(spec.lights):
            node = _ordered_node_class(pr)(slot=len(self._light_nodes), light=pr.DirectionalLight())
            self._scene.add_node(node)
            self._light_nodes.append(node)
        while len(self._light_nodes) > len(spec.lights):
            self._scene.remove_node(self._light_nodes.pop())
        for node, light in zip(self._light_nodes, spec.lights):  # directions are relative to the camera
            node.light.color, node.light.intensity = np.asarray(light.colour), light.intensity
            self._scene.set_pose(node, light_pose(camera_pose, light))
        self._scene.ambient_light = np.full(3, spec.ambient)

    def _set_window(self, vertices: np.ndarray, camera_pose: np.ndarray, fpx: float, width: int,
                    height: int) -> tuple[int, int, int, int]:
        """Confine drawing to the pixel box of the character's projection (with 2-3 px to spare
        for the anti-aliased edge). On llvmpipe the frame-sized work (clearing and resolving the 4x MSAA
        buffers, reading back) costs more than shading the character; outside the box the picture
        is empty anyway. The whole frame when a vertex is behind the camera or cropping is off."""
        box = (0, 0, width, height)
        xy, depth = project(vertices, camera_pose, fpx, width, height)
        if self.crop_to_character and (depth > 0).all():
            x0, y0 = np.maximum(np.floor(xy.min(0)).astype(int) - 2, 0)
            x1, y1 = np.minimum(np.ceil(xy.max(0)).astype(int) + 3, (width, height))
            if x1 > x0 and y1 > y0:
                box = (int(x0), int(y0), int(x1), int(y1))
        self._renderer._renderer.window = box
        gl = self._gl
        gl.glEnable(gl.GL_SCISSOR_TEST)  # pyrender's clear and draws then stay inside the box
        gl.glScissor(box[0], height - box[3], box[2] - box[0], box[3] - box[1])
        return box

    def render(self, spec: SceneSpec, with_head_mask: bool = False) -> dict:
        if self._character is None:
            raise RuntimeError("load a character before rendering")
        pr = self._pyrender
        width, height = spec.resolution
        if self._renderer is None:
            self._renderer = pr.OffscreenRenderer(width, height)
            self._renderer._renderer._program_cache = _program_cache_class(pr)()
            self._renderer._renderer.__class__ = _windowed_renderer_class(pr)
        self._renderer.viewport_width, self._renderer.viewport_height = width, height
        posed, vertices, camera_pose, fpx = pose_and_frame(self._character, spec)
        self._set_view(spec, camera_pose, fpx)
        self._renderer._platform.make_current()
        x0, y0, x1, y1 = self._set_window(vertices, camera_pose, fpx, width, height)
        self._upload(posed)
        rgba, depth = self._renderer.render(self._scene, flags=pr.RenderFlags.RGBA)
        _straight_alpha(rgba[y0:y1, x0:x1])
        # MSAA coverage is the mask: it keeps the anti-aliased silhouette (the background clears to 0)
        result = character_result(rgba, depth, posed, self._character, camera_pose, fpx, spec)
        if with_head_mask:
            result["head_mask"] = self._head_mask(posed, camera_pose, fpx, width, height)
        return result

    def _head_mask(self, posed: PosedCharacter, camera_pose: np.ndarray, fpx: float, width: int,
                   height: int) -> np.ndarray:
        """Pixels of the faces riding rigidly on the head, alone and unoccluded (for QA and tests).
        Drawn in a scratch scene; the main scene is uploaded again on its next render."""
        pr = self._pyrender
        scene = pr.Scene()
        for prim, positions in zip(self._character.primitives, posed.positions):
            if prim.head_faces.any():
                scene.add(pr.Mesh([pr.Primitive(positions=positions, indices=prim.faces[prim.head_faces])]))
        scene.add(pr.IntrinsicsCamera(fx=fpx, fy=fpx, cx=width / 2, cy=height / 2, znear=0.01, zfar=1000.0),
                  pose=camera_pose)
        depth = self._renderer.render(scene, flags=pr.RenderFlags.DEPTH_ONLY)
        return depth > 0

    def close(self) -> None:
        """Free this backend's GL objects and context, and only those: pyrender's own cleanup
        (delete(), and the __del__ of its renderer and platform) terminates the process-wide EGL
        display, which would break every other renderer in the process."""
        if self._renderer is None:
            return
        from OpenGL import EGL
        from OpenGL.error import GLError
        platform = self._renderer._platform  # pyrender is pinned (0.1.45): these names are stable
        try:
            platform.make_current()
        except (GLError, AssertionError):
            # Current in another thread (Ray runs a worker's batches on one thread and drops the
            # worker on another): EGL destroys the context, and its objects, once that thread lets
            # go. Their GL names must not be freed from here, where they would name another
            # renderer's objects: pyrender's finalizer must not delete them, and the scene gets
            # fresh, unbound meshes in case this backend renders again.
            self._renderer._renderer.delete = lambda: None
            if self._character is not None:
                self.load(self._character)
        else:
            self._renderer._renderer.delete()
            EGL.eglMakeCurrent(platform._egl_display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
        EGL.eglDestroyContext(platform._egl_display, platform._egl_context)
        platform._egl_context = platform._egl_display = None  # leaves pyrender's finalizers nothing to do
        self._renderer = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit GL may already be gone
            pass
