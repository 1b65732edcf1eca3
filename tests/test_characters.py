import json
import shutil
import subprocess

import numpy as np
import pytest

from render.characters import CharacterError, load_character, pose_character
from render.procedural import (
    SHAPE_KEYS,
    generate_characters,
    sample_params,
    write_character_glb,
)
from render.skeleton import JOINTS
from tests.helpers import ROOT, make_cyclic, make_unmappable, make_unskinned, rewrite_glb


def test_characters_are_rigged_and_different(character_dir):
    chars = [load_character(p) for p in sorted(character_dir.glob("*.glb"))]
    assert len(chars) == 4
    for char in chars:
        assert len(char.joint_nodes) == len(JOINTS) >= 20
        assert set(char.shape_keys) == set(SHAPE_KEYS)
        prim = char.primitives[0]
        assert prim.joints.shape[1] == 4 and np.allclose(prim.weights.sum(1), 1, atol=1e-5)
        assert prim.texture is not None
    heights = [c.height() for c in chars]
    assert len({round(h, 3) for h in heights}) == 4
    textures = [c.primitives[0].texture for c in chars]
    assert all(np.abs(textures[0].astype(int) - t).mean() > 10 for t in textures[1:])


def test_surfaces_face_outward(character_dir):
    """Faces wind counter-clockwise seen from outside (renderers cull the other side): every
    character's closed surface encloses a positive signed volume, and its normals agree."""
    for path in sorted(character_dir.glob("*.glb")):
        for prim in load_character(path).primitives:
            tri = prim.positions[prim.faces].astype(float)
            assert np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() > 0, path.name
            face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            assert ((face_normals * prim.normals[prim.faces].sum(1)).sum(1) >= 0).mean() > 0.99, path.name


def test_sizes_span_half_to_twice_default():
    heights = [sample_params(seed).proportions.height / 1.7 for seed in range(300)]
    assert 0.5 <= min(heights) < 0.6 and 1.8 < max(heights) <= 2.0


def test_shape_keys_move_the_face(character_dir):
    char = load_character(sorted(character_dir.glob("*.glb"))[0])
    neutral = pose_character(char, {}).positions[0]
    for name in SHAPE_KEYS:
        moved = pose_character(char, {}, {name: 1.0}).positions[0]
        shift = np.linalg.norm(moved - neutral, axis=1)
        assert shift.max() > 0.03 * char.height() / 8, name  # >= 3 % of a head: pixels at any useful size
        head_top = neutral[:, 1].max()
        assert neutral[shift > 1e-6, 1].min() > head_top - 0.25 * char.height(), f"{name} moves only the head"


@pytest.mark.skipif(not (ROOT / "node_modules/gltf-validator").exists() or not shutil.which("node"),
                    reason="gltf-validator not installed (run setup.sh)")
def test_every_glb_passes_the_khronos_validator(tmp_path):
    paths = generate_characters(tmp_path, 6, seed=11)
    paths += [write_character_glb(sample_params(3), tmp_path / f"{scheme}.glb", scheme, "A", 30.0)
              for scheme in ("mixamo", "vroid", "rigify", "unreal", "smpl")]  # A-pose rests, rolled bones
    out = subprocess.run(["node", str(ROOT / "tests/tools/validate_gltf.js"), *map(str, paths)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    reports = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(reports) == 11
    for report in reports:
        assert report["errors"] == 0, report["messages"]
        assert report["warnings"] == 0, report["messages"]


def test_broken_assets_are_refused_with_a_reason(tmp_path, character_dir):
    good = sorted(character_dir.glob("*.glb"))[0]
    (tmp_path / "empty.glb").write_bytes(b"")
    with pytest.raises(CharacterError, match="too short"):
        load_character(tmp_path / "empty.glb")
    (tmp_path / "cut.glb").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CharacterError, match="truncated"):
        load_character(tmp_path / "cut.glb")
    (tmp_path / "noise.glb").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(CharacterError, match="not a binary glTF"):
        load_character(tmp_path / "noise.glb")
    for builder, reason in ((make_unskinned, "no skinned mesh"), (make_unmappable, "missing hips"),
                            (make_cyclic, "cycle")):
        with pytest.raises(CharacterError, match=reason):
            load_character(builder(good, tmp_path))


def test_expressions_drive_each_pipelines_own_shape_keys(tmp_path, character_dir):
    """Specs name canonical expressions; a rig with ARKit blendshapes shows them through its keys."""
    good = sorted(character_dir.glob("*.glb"))[0]

    def arkit(gltf):
        order = gltf["meshes"][0]["extras"]["targetNames"]  # smile, mouth_open, eyes_closed
        arkit_names = {"smile": "mouthSmileLeft", "mouth_open": "jawOpen", "eyes_closed": "eyeBlink"}
        gltf["meshes"][0]["extras"]["targetNames"] = [arkit_names[n] for n in order]
    arkit_rig = load_character(rewrite_glb(good, tmp_path / "arkit.glb", arkit))
    canonical = load_character(good)
    assert arkit_rig.expressions == ["mouth_open"]  # smile needs both mouthSmile sides, blink both eyes
    for name in ("mouth_open",):
        a = pose_character(arkit_rig, {}, {name: 1.0}).positions[0]
        b = pose_character(canonical, {}, {name: 1.0}).positions[0]
        assert np.array_equal(a, b)
    neutral = pose_character(arkit_rig, {}).positions[0]
    assert np.array_equal(pose_character(arkit_rig, {}, {"smile": 1.0}).positions[0], neutral)


def test_vroid_named_keys_show_every_canonical_expression(tmp_path, character_dir):
    good = sorted(character_dir.glob("*.glb"))[0]

    def vroid(gltf):
        names = {"smile": "Fcl_ALL_Joy", "mouth_open": "Fcl_MTH_A", "eyes_closed": "Fcl_EYE_Close"}
        gltf["meshes"][0]["extras"]["targetNames"] = [names[n] for n in gltf["meshes"][0]["extras"]["targetNames"]]
    rig, canonical = load_character(rewrite_glb(good, tmp_path / "vroid.glb", vroid)), load_character(good)
    assert rig.expressions == canonical.expressions == sorted(SHAPE_KEYS)
    for name in SHAPE_KEYS:
        assert np.array_equal(pose_character(rig, {}, {name: 0.7}).positions[0],
                              pose_character(canonical, {}, {name: 0.7}).positions[0])
