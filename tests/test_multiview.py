"""Multi-view object renders (AnyStory's 3-D subject data): mesh assets of several formats ->
``multiview`` shards with evenly spaced ring cameras that frame the object; a broken asset is a
reject and the job goes on."""
import json

import numpy as np
import pytest

from render.geometry import project

pytestmark = [pytest.mark.blender, pytest.mark.slow]


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    import trimesh

    folder = tmp_path_factory.mktemp("objects")
    mug = trimesh.util.concatenate([trimesh.creation.cylinder(radius=0.4, height=1.0),
                                    trimesh.creation.box((0.5, 0.3, 0.1)).apply_translation((0.5, 0.0, 0.0))])
    mug.visual.face_colors = (200, 60, 40, 255)
    mug.export(folder / "mug.glb")
    trimesh.creation.box((2.0, 0.5, 1.0)).export(folder / "brick.obj")
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=30.0)  # other units: framing must not care
    sphere.visual.vertex_colors = (40, 120, 220, 255)
    sphere.export(folder / "ball.ply")
    (folder / "broken.obj").write_text("this is not a mesh\n")
    (folder / "notes.txt").write_text("ignored: not a mesh format")
    return folder


def test_multiview_job_writes_seven_framed_views_per_object(tmp_path, objects):
    from ray_jobs.cli import main
    from shards.inspect import inspect_dataset
    from shards.reader import iter_dataset

    out = tmp_path / "mv"
    assert main(["multiview", "--objects", str(objects), "--out", str(out), "--engine", "cycles", "--runner", "local",
                 "--quiet", "--set", "resolution=[160, 128]", "--set", "blender.samples=4"]) == 0
    assert inspect_dataset(out).ok
    manifest = json.loads((out / "shard-000000.json").read_text())
    assert manifest["status"] == {"ok": 3, "rejected": 1}
    assert "broken.obj" in manifest["rejects"][0]["error"]
    records = {r["json"]["object_id"]: r for r in iter_dataset(out)}
    assert sorted(records) == ["ball", "brick", "mug"]
    for name, record in records.items():
        views = record["json"]["views"]
        assert len(views) == 7 and record["json"]["renderer"]["name"] == "blender"
        steps = np.diff(np.unwrap(np.radians([v["azimuth_deg"] for v in views])))
        np.testing.assert_allclose(np.degrees(steps), 360 / 7, atol=1e-3)
        assert {v["elevation_deg"] for v in views} == {20.0}
        lo, hi = (np.asarray(b) for b in record["json"]["bounds"])
        for i, view in enumerate(views):
            image = record[f"view{i}.png"]
            assert image.shape == (128, 160, 4)
            alpha = image[..., 3] > 0
            camera = view["camera"]
            xy, _ = project(((lo + hi) / 2)[None], np.asarray(camera["pose"]), camera["focal_px"], 160, 128)
            assert np.abs(xy[0] - (80, 64)).max() < 0.5  # every camera looks at the object's centre
            ys, xs = np.nonzero(alpha)
            assert 0 < xs.min() and xs.max() < 159 and 0 < ys.min() and ys.max() < 127  # nothing cut off
            assert max(xs.ptp(), ys.ptp()) > 0.3 * 128  # and not lost in the distance
    for name, channel in (("ball", 2), ("mug", 0)):  # vertex colours (.ply) and glTF colours show
        image = records[name]["view0.png"]
        colour = image[image[..., 3] == 255][:, :3].mean(0)
        assert colour[channel] > np.delete(colour, channel).max() + 40, (name, colour)
    mug = [records["mug"][f"view{i}.png"][..., 3] > 0 for i in range(7)]
    assert len({m.tobytes() for m in mug}) == 7  # the handle turns with the ring
