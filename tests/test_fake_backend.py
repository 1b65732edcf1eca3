"""The fake renderer (render.backends.fake_backend): a GL-free numpy rasterizer for tests and CI.
It must agree with pyrender where both compute the same thing (silhouette, projected keypoints,
face box), import no GL at all, and drive RenderStage to valid synthetic_pair records."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from render.characters import load_character
from render.spec import SamplingRanges, StandardView, sample_source_spec, standard_spec
from tests.helpers import ROOT

SIZE = (128, 192)


def _specs(char, path: Path, count: int = 6):
    return [standard_spec(StandardView(), char.id, path.name, SIZE)] + [
        sample_source_spec(SamplingRanges(), 300 + k, 0, char.id, path.name, k, 0, char.expressions, SIZE)
        for k in range(count)]


def test_backends_follow_the_renderer_protocol(backend):
    from render.backends import CharacterLoader, Renderer, make_backend
    fake = make_backend("fake")
    assert isinstance(fake, Renderer) and isinstance(fake, CharacterLoader)
    assert (fake.name, fake.version) == ("fake", "1")
    assert isinstance(backend, Renderer) and isinstance(backend, CharacterLoader)  # pyrender


def test_fake_agrees_with_pyrender_on_silhouette_keypoints_and_face_box(character_dir, backend):
    from render.backends import make_backend
    fake = make_backend("fake")
    ious = []
    for path in sorted(character_dir.glob("*.glb")):
        char = load_character(path)
        backend.load(char)
        fake.load(char)
        for spec in _specs(char, path):
            want, got = backend.render(spec), fake.render(spec)
            iou = (want["mask"] & got["mask"]).sum() / max((want["mask"] | got["mask"]).sum(), 1)
            ious.append(iou)
            assert iou >= 0.85, (path.name, spec.pose_id, iou)
            # the same posing and camera solve: the projected points are the same numbers
            np.testing.assert_array_equal(got["keypoints"][:, :2], want["keypoints"][:, :2])
            assert got["face_box"] == want["face_box"] and got["camera"] == want["camera"]
            # visibility is depth-tested against each renderer's own depth: nearly always the same
            assert (got["keypoints"][:, 2] == want["keypoints"][:, 2]).mean() >= 0.75
            both = want["mask"] & got["mask"] & (want["depth"] > 0)
            assert np.median(np.abs(got["depth"][both] - want["depth"][both])) < 0.01 * char.height()
    assert len(ious) == 4 * 7 and np.mean(ious) >= 0.9


def test_fake_result_is_well_formed_and_deterministic(character_dir):
    from render.backends import make_backend
    paths = sorted(character_dir.glob("*.glb"))
    first, second = make_backend("fake"), make_backend("fake")
    second.open_character(paths[1])
    second.render(_specs(load_character(paths[1]), paths[1], 1)[1])  # something else rendered before
    char = first.open_character(paths[0])
    second.open_character(paths[0])
    for spec in _specs(char, paths[0], 3):
        a, b = first.render(spec), second.render(spec)
        for name in ("rgba", "depth", "keypoints", "mask"):
            assert a[name].tobytes() == b[name].tobytes(), name
        assert a["rgba"].shape == (SIZE[1], SIZE[0], 4) and a["rgba"].dtype == np.uint8
        assert a["depth"].shape == (SIZE[1], SIZE[0]) and a["depth"].dtype == np.float32
        assert set(np.unique(a["rgba"][..., 3])) == {0, 255}
        assert np.array_equal(a["mask"], a["depth"] > 0) and a["mask"].mean() > 0.05
        assert a["rgba"][~a["mask"]].max() == 0 and a["rgba"][a["mask"], :3].max() > 0
        assert a["keypoints"][:, 2].sum() >= 10
        if spec.background == "white":
            assert a["rgb_on_white"][0, 0].tolist() == [255, 255, 255]
        else:
            assert a["rgb_on_white"] is None
    first.close()
    with pytest.raises(RuntimeError):
        first.render(spec)


def test_fake_renderer_never_imports_gl_and_gives_the_same_bytes_in_another_process(character_dir):
    path = sorted(character_dir.glob("*.glb"))[0]
    code = f"""
import hashlib, sys
from render.backends import make_backend
from render.spec import SamplingRanges, sample_source_spec
backend = make_backend("fake")
char = backend.open_character({str(path)!r})
result = backend.render(sample_source_spec(SamplingRanges(), 1, 0, char.id, "c.glb", 0, 0, [], (64, 96)))
backend.close()
digest = hashlib.sha256(result["rgba"].tobytes() + result["depth"].tobytes()).hexdigest()
print(digest, int(result["mask"].sum()), sorted(m for m in sys.modules if m.split(".")[0] in ("pyrender", "OpenGL")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    digest, covered, modules = out.stdout.strip().split(" ", 2)
    assert int(covered) > 100
    assert modules == "[]", modules

    from render.backends import make_backend
    here = make_backend("fake")
    char = here.open_character(path)
    result = here.render(sample_source_spec(SamplingRanges(), 1, 0, char.id, "c.glb", 0, 0, [], (64, 96)))
    assert hashlib.sha256(result["rgba"].tobytes() + result["depth"].tobytes()).hexdigest() == digest


def test_render_stage_with_the_fake_backend_writes_valid_synthetic_pairs(character_dir):
    from ray_jobs.config import load_config
    from render.config import RenderConfig
    from render.stage import RenderStage, plan_items
    from shards.reader import decode_member
    from shards.schema import SYNTHETIC_PAIR

    config = load_config(RenderConfig, "demo", ["backend=fake", "poses_per_character=2", "resolution=[128, 192]"])
    files = [str(p) for p in sorted(character_dir.glob("*.glb"))[:2]]
    items = plan_items(config, files)
    assert len(items) == 4
    stage = RenderStage(config)
    stage.setup()  # as a runner does
    try:
        assert stage.backend.name == "fake"
        records = stage.process_batch(items)
    finally:
        stage.teardown()
    assert [r["__key__"] for r in records] == [i["__key__"] for i in items]
    assert not [r for r in records if r.get("status") == "rejected"], records
    std_by_character = {}
    for record in records:
        decoded = {"__key__": record["__key__"],
                   **{m: decode_member(m, record[m]) for m in ("src.png", "std.png", "json")}}
        assert SYNTHETIC_PAIR.validate(decoded) == []
        meta = decoded["json"]
        assert meta["renderer"] == {"name": "fake", "version": "1"}
        assert decoded["src.png"].shape == (192, 128, 4) and (decoded["src.png"][..., 3] > 0).mean() > 0.02
        assert decoded["std.png"][0, 0].tolist() == [255, 255, 255]
        std_by_character.setdefault(meta["character_id"], set()).add(json.dumps(meta["std"], sort_keys=True))
    assert len(std_by_character) == 2 and all(len(s) == 1 for s in std_by_character.values())
