import dataclasses
from pathlib import Path

import numpy as np
import pytest

from render.characters import load_character
from render.procedural import sample_params, write_character_glb
from render.spec import (
    SamplingRanges,
    SceneSpec,
    StandardView,
    sample_source_spec,
    standard_spec,
)


def test_scene_spec_round_trips_through_json():
    spec = sample_source_spec(SamplingRanges(), 5, 0, "c", "c.glb", 3, 0, ["smile"], (512, 768))
    assert SceneSpec.from_json(spec.to_json()) == spec
    assert SceneSpec.from_json(spec.to_json()).to_json() == spec.to_json()
    assert sample_source_spec(SamplingRanges(), 5, 0, "c", "c.glb", 3, 0, ["smile"], (512, 768)) == spec


@pytest.mark.parametrize("resolution", [(512, 768), (256, 384)])
def test_standardized_face_lands_on_its_fixed_pixels(tmp_path, backend, resolution):
    """Across sizes 0.5x-2x and body shapes, the rendered head (bald, so the skull is measurable)
    is centred within 2 px of the target and its height within 3 %."""
    view = StandardView()
    width, height = resolution
    target = np.array([view.face_center[0] * width, view.face_center[1] * height])
    heights = []
    for seed in range(10):
        params = dataclasses.replace(sample_params(seed), hair_style="bald")
        char = load_character(write_character_glb(params, tmp_path / f"bald{seed}.glb"))
        heights.append(params.proportions.height / 1.7)
        backend.load(char)
        result = backend.render(standard_spec(view, char.id, char.path, resolution), with_head_mask=True)
        ys, xs = np.nonzero(result["head_mask"])
        centre = np.array([(xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2])
        assert np.all(np.abs(centre - target) <= 2.0), (seed, centre, target)
        assert abs((ys.max() + 1 - ys.min()) / (view.head_height * height) - 1) <= 0.03
        x0, y0, x1, y1 = result["face_box"]
        assert abs((y0 + y1) / 2 - target[1]) < 0.5 and abs((y1 - y0) - view.head_height * height) < 0.5
        rgb = result["rgb_on_white"]
        assert rgb[0, 0].tolist() == [255, 255, 255] and rgb.shape == (height, width, 3)
    assert min(heights) < 0.8 and max(heights) > 1.5  # the seeds span small and large characters


def test_visible_keypoints_fall_inside_the_alpha_mask(character_dir, backend):
    inside = total = 0
    for path in sorted(character_dir.glob("*.glb")):
        char = load_character(path)
        backend.load(char)
        for k in range(12):
            spec = sample_source_spec(SamplingRanges(), 100 + k, 0, char.id, path.name, k, 0, char.expressions,
                                      (256, 384))
            result = backend.render(spec)
            kp = result["keypoints"]
            visible = kp[kp[:, 2] > 0]
            inside += result["mask"][visible[:, 1].astype(int), visible[:, 0].astype(int)].sum()
            total += len(visible)
            assert result["rgba"][~result["mask"]].max(initial=0) == 0  # transparent pixels are clean zeros
    assert total > 0.6 * 4 * 12 * 18
    assert inside / total >= 0.98


def test_renders_are_deterministic_across_characters_and_renderers(character_dir, backend):
    """The same spec gives the same bytes whatever was rendered before and in whichever renderer;
    closing one renderer leaves the others working."""
    from render.backends import make_backend
    chars = [load_character(p) for p in sorted(character_dir.glob("*.glb"))]
    specs = [sample_source_spec(SamplingRanges(), 9 + i, 0, c.id, c.path, i, 0, c.expressions, (128, 192))
             for i, c in enumerate(chars)]
    runs = []
    for order in (range(len(chars)), reversed(range(len(chars)))):
        other = make_backend("pyrender")
        out = {}
        for i in order:
            other.load(chars[i])
            other.render(standard_spec(StandardView(), chars[i].id, chars[i].path, (128, 192)), with_head_mask=True)
            out[i] = other.render(specs[i])["rgba"]
        other.close()
        runs.append(out)
    for i in range(len(chars)):
        assert np.array_equal(runs[0][i], runs[1][i]), i
    dropped = make_backend("pyrender")  # a renderer dropped without close() must not break others either
    dropped.load(chars[1])
    dropped.render(specs[1])
    del dropped
    backend.load(chars[0])
    assert np.array_equal(backend.render(specs[0])["rgba"], runs[0][0])


def test_lights_reach_the_shader_in_the_specs_order_in_every_renderer(character_dir):
    """pyrender binds lights in the iteration order of a set; for plain nodes that order follows
    memory addresses, so the shader summed lights in a different order per renderer and a pixel at
    a rounding edge changed by 1/255 between re-runs."""
    from render.backends import make_backend
    from render.spec import LightSpec
    character = load_character(sorted(character_dir.glob("*.glb"))[0])
    spec = sample_source_spec(SamplingRanges(), 3, 0, character.id, character.path, 0, 0, [], (64, 96))
    spec = dataclasses.replace(spec, lights=tuple(LightSpec(10.0 * i, 20.0, 1.0 + i) for i in range(5)))
    for _ in range(6):
        renderer = make_backend("pyrender")
        renderer.load(character)
        renderer.render(spec)
        bound = [node.light.intensity for node in renderer._scene.light_nodes]  # the order pyrender binds
        renderer.close()
        assert bound == [light.intensity for light in spec.lights]


def test_drawing_only_the_characters_box_changes_no_pixel(character_dir):
    """The backend confines drawing to the character's pixel box; a whole-frame render of the same
    specs must give the same bytes, depth, keypoints and head mask."""
    from render.backends import make_backend
    cropped, whole = make_backend("pyrender"), make_backend("pyrender")
    whole.crop_to_character = False
    for path in sorted(character_dir.glob("*.glb"))[:2]:
        character = load_character(path)
        specs = [standard_spec(StandardView(), character.id, character.path, (192, 288))]
        specs += [sample_source_spec(SamplingRanges(), 40 + i, 0, character.id, character.path, i, 0,
                                     character.expressions, (192, 288)) for i in range(4)]
        cropped.load(character)
        whole.load(character)
        for spec in specs:
            a, b = cropped.render(spec, with_head_mask=True), whole.render(spec, with_head_mask=True)
            for key in ("rgba", "depth", "keypoints", "head_mask", "face_box"):
                assert np.array_equal(a[key], b[key]), (character.id, spec.pose_id, key)
    cropped.close()
    whole.close()


def test_a_renderer_used_on_one_thread_closes_on_another(character_dir):
    """Ray runs a worker's batches on one thread and drops the worker (closing its stage) on
    another, where the GL context cannot be made current. Closing must neither raise nor free GL
    names from there (they would name another renderer's objects), and the backend renders again."""
    import gc
    import threading

    from render.backends import make_backend
    character = load_character(sorted(character_dir.glob("*.glb"))[0])
    spec = sample_source_spec(SamplingRanges(), 5, 0, character.id, character.path, 0, 0, [], (64, 96))
    renderer, other = make_backend("pyrender"), make_backend("pyrender")
    renderer.load(character)
    worker = threading.Thread(target=renderer.render, args=(spec,))
    worker.start()
    worker.join()
    other.load(character)
    before = other.render(spec)["rgba"]
    renderer.close()  # its context is still current on the (finished) worker thread
    gc.collect()  # pyrender's finalizers of the closed renderer run now
    assert np.array_equal(other.render(spec)["rgba"], before)
    assert np.array_equal(renderer.render(spec)["rgba"], before)  # and the closed backend renders again
    other.close()
    renderer.close()


def test_the_mesh_shader_without_point_and_spot_lights_gives_pyrenders_pixels(character_dir):
    """The backend compiles pyrender's mesh shader without the point- and spot-light loops (its
    scenes have neither); the pictures must stay pyrender's own, to the byte."""
    import pyrender

    from render.backends import make_backend
    from render.backends.pyrender_backend import _POINT_AND_SPOT_LOOPS
    shader = Path(pyrender.__file__).with_name("shaders") / "mesh.frag"
    assert _POINT_AND_SPOT_LOOPS.search(shader.read_text()), "pyrender's shader changed: the loops are not cut"
    renderer = make_backend("pyrender")
    for path in sorted(character_dir.glob("*.glb"))[:2]:
        character = load_character(path)
        renderer.load(character)
        specs = [standard_spec(StandardView(), character.id, character.path, (128, 192))]
        specs += [sample_source_spec(SamplingRanges(), 60 + i, 0, character.id, character.path, i, 0,
                                     character.expressions, (128, 192)) for i in range(2)]
        ours = [renderer.render(spec)["rgba"] for spec in specs]
        cache, renderer._renderer._renderer._program_cache = (renderer._renderer._renderer._program_cache,
                                                              pyrender.shader_program.ShaderProgramCache())
        theirs = [renderer.render(spec)["rgba"] for spec in specs]
        renderer._renderer._renderer._program_cache = cache
        for a, b in zip(ours, theirs):
            assert np.array_equal(a, b)
    renderer.close()


@pytest.mark.slow
def test_torch_compilers_llvm_loads_after_a_render_in_the_same_process(tmp_path):
    """Mesa's llvmpipe and triton each bring an LLVM; loaded llvmpipe-first, triton's import
    crashed the process (what a caption or training step after an in-process render did)."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton (torch's GPU compiler) is not installed")
    script = f"""
from render.backends import make_backend
from render.characters import load_character
from render.procedural import generate_characters
from render.spec import SamplingRanges, sample_source_spec
path = generate_characters({str(tmp_path)!r}, 1, seed=0)[0]
character = load_character(path)
backend = make_backend("pyrender")
backend.load(character)
spec = sample_source_spec(SamplingRanges(), 0, 0, character.id, path.name, 0, 0, character.expressions, (64, 96))
assert backend.render(spec)["rgba"][..., 3].any()
import torch._dynamo  # imports triton when it is installed
print("both loaded")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                            cwd=Path(__file__).parents[1])
    assert result.returncode == 0 and "both loaded" in result.stdout, result.stderr[-2000:]
