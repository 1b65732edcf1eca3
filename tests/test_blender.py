"""The blender backend: parity with pyrender on the same specs, every asset format, scripts
inside assets never run, broken assets rejected with reasons, and a crashed, hung or slow
Blender worker replaced, retried and finally rejected with its log. bpy runs only in the
backend's worker processes, never in this one."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from render.characters import CharacterError
from render.backends.settings import BlenderSettings
from render.spec import SamplingRanges, StandardView, sample_source_spec, standard_spec

pytestmark = pytest.mark.blender  # needs bpy: skipped without it (conftest.py); the slow ones are marked one by one

TOOLS = Path(__file__).parent / "tools"
SMALL = (256, 384)


def blender(log_dir=None, **settings):
    from render.backends.blender_backend import BlenderBackend
    return BlenderBackend(BlenderSettings(**{"engine": "BLENDER_WORKBENCH", **settings}), log_dir=log_dir)


def specs(character, count: int, resolution=SMALL):
    out = [standard_spec(StandardView(), character.id, Path(character.path).name, resolution)]
    for i in range(count):
        out.append(sample_source_spec(SamplingRanges(), 100 + i, 1, character.id, Path(character.path).name, i, 0,
                                      character.expressions, resolution))
    return out


def iou(a, b) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.slow
def test_cycles_matches_pyrender_on_the_same_specs(character_dir, backend):
    """Same SceneSpec, two renderers: silhouettes agree (IoU >= 0.9) and Blender's posed bones
    project within 2 px of the numpy skeleton's keypoints, for characters of many sizes."""
    cycles = blender(engine="CYCLES", samples=8)
    try:
        for path in sorted(character_dir.glob("*.glb"))[:3]:
            reference = backend.open_character(path)
            cycles.open_character(path)
            for spec in specs(reference, 3):
                ours, theirs = cycles.render(spec), backend.render(spec)
                assert iou(ours["mask"], theirs["mask"]) >= 0.9, (path.name, spec.pose_id)
                assert np.abs(ours["keypoints"][:, :2] - theirs["keypoints"][:, :2]).max() <= 2.0
                assert (ours["keypoints"][:, 2] == theirs["keypoints"][:, 2]).mean() >= 0.8
                assert np.abs(np.subtract(ours["face_box"], theirs["face_box"])).max() <= 2.0
                visible = ours["depth"] > 0
                assert iou(visible, ours["mask"]) > 0.9  # depth and alpha describe the same surface
                both = visible & (theirs["depth"] > 0)
                assert np.median(np.abs(ours["depth"][both] / theirs["depth"][both] - 1)) < 0.01
    finally:
        cycles.close()


@pytest.fixture(scope="module")
def assets(tmp_path_factory, character_dir):
    """The first procedural character saved by Blender as .fbx, .blend, a .blend with its rig
    hidden from render, a .blend with a text block registered to run on load, and a copy as .vrm."""
    out = tmp_path_factory.mktemp("assets")
    glb = sorted(character_dir.glob("*.glb"))[0]
    spec = {"glb": str(glb), "fbx": str(out / "hero.fbx"), "blend": str(out / "hero.blend"),
            "hidden_rig_blend": str(out / "hidden_rig.blend"),
            "trojan_blend": str(out / "trojan.blend"), "marker": str(out / "MARKER"),
            "driver_marker": str(out / "DRIVER_MARKER")}
    (out / "spec.json").write_text(json.dumps(spec))
    made = subprocess.run([sys.executable, str(TOOLS / "blender_make_assets.py"), str(out / "spec.json")],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    (out / "hero.vrm").write_bytes(glb.read_bytes())
    return out, glb


@pytest.mark.slow
def test_every_asset_format_renders_like_the_glb(assets, backend):
    out, glb = assets
    reference = backend.open_character(glb)
    spec = specs(reference, 1)[1]
    expected = backend.render(spec)
    workbench = blender()
    try:
        for name in ("hero.vrm", "hero.fbx", "hero.blend", "hidden_rig.blend"):
            character = workbench.open_character(out / name)
            assert character.id == Path(name).stem and character.expressions == reference.expressions
            result = workbench.render(spec)
            assert iou(result["mask"], expected["mask"]) >= 0.9, name
            assert np.abs(result["keypoints"][:, :2] - expected["keypoints"][:, :2]).max() <= 2.0, name
    finally:
        workbench.close()


TRUSTING_APPEND = """
import bpy, sys
bpy.context.preferences.filepaths.use_scripts_auto_execute = True
with bpy.data.libraries.load(sys.argv[1], link=False) as (source, target):
    target.objects = list(source.objects)
for obj in target.objects:
    bpy.context.scene.collection.objects.link(obj)
bpy.context.view_layer.update()
"""


@pytest.mark.slow
def test_scripts_inside_a_blend_never_run(assets):
    """A .blend with a text block registered to run on load and a Python driver: the backend
    imports and renders it and neither runs. The controls show both are armed: Blender opening
    the file as trusted runs the text block, appending it with auto-execution on runs the driver."""
    out, _ = assets
    marker, driver_marker = out / "MARKER", out / "DRIVER_MARKER"
    workbench = blender()
    try:
        character = workbench.open_character(out / "trojan.blend")
        for spec in specs(character, 1):
            assert workbench.render(spec)["mask"].any()
    finally:
        workbench.close()
    assert not marker.exists(), "a text block inside the asset ran"
    assert not driver_marker.exists(), "a Python driver inside the asset ran"
    for code in ("import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1], use_scripts=True)",
                 TRUSTING_APPEND):
        control = subprocess.run([sys.executable, "-c", code, str(out / "trojan.blend")], capture_output=True,
                                 text=True, timeout=300)
        assert control.returncode == 0, control.stderr[-2000:]
    assert marker.exists() and driver_marker.exists()
    marker.unlink()
    driver_marker.unlink()


def test_broken_assets_are_rejected_with_reasons_and_the_worker_goes_on(tmp_path, character_dir):
    (tmp_path / "empty.fbx").write_bytes(b"")
    (tmp_path / "garbage.blend").write_bytes(b"BLENDER-v300" + os.urandom(2000))
    (tmp_path / "static.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    workbench = blender()
    try:
        good = sorted(character_dir.glob("*.glb"))[0]
        workbench.open_character(good)
        pid = workbench.worker_pid
        reasons = {}
        for name in ("empty.fbx", "garbage.blend", "static.obj", "missing.glb"):
            with pytest.raises(CharacterError) as error:
                workbench.open_character(tmp_path / name)
            reasons[name] = str(error.value)
        assert "empty file" in reasons["empty.fbx"]
        assert "garbage.blend" in reasons["garbage.blend"]
        assert ".obj" in reasons["static.obj"]
        assert "no such file" in reasons["missing.glb"]
        log = Path(reasons["garbage.blend"].rsplit("(log ", 1)[1].rstrip(")"))
        assert log.is_file()  # Blender's own messages about the asset
        character = workbench.open_character(good)
        assert workbench.render(specs(character, 1)[1])["mask"].any()
        assert workbench.worker_pid == pid  # rejects cost no restarts
    finally:
        workbench.close()


@pytest.mark.slow
def test_a_crashed_or_hung_worker_is_replaced_and_the_character_retried(tmp_path, character_dir):
    workbench = blender(timeout_s=8.0, log_dir=tmp_path / "logs")
    try:
        character = workbench.open_character(sorted(character_dir.glob("*.glb"))[1])
        spec = specs(character, 1)[1]
        first = workbench.render(spec)
        crashed = workbench.worker_pid
        os.kill(crashed, signal.SIGKILL)
        again = workbench.render(spec)  # a new worker loads the character again and renders
        assert workbench.worker_pid != crashed
        np.testing.assert_array_equal(again["rgba"], first["rgba"])
        hung = workbench.worker_pid
        os.kill(hung, signal.SIGSTOP)
        started = time.monotonic()
        assert workbench.render(spec)["mask"].any()
        assert workbench.worker_pid != hung and time.monotonic() - started >= 8.0
        assert len(list((tmp_path / "logs").glob("blender-worker-*.log"))) == 3
    finally:
        workbench.close()


@pytest.mark.slow
def test_a_character_that_keeps_failing_is_rejected_with_the_log(tmp_path, character_dir):
    """Renders that never finish in time: each try replaces the worker; after ``tries`` the
    character is rejected naming the logs, and its later samples fail at once."""
    from render.backends.blender_backend import WorkerFailed
    slow = blender(engine="CYCLES", samples=100000, denoiser="NONE", timeout_s=2.0, tries=2,
                   log_dir=tmp_path / "logs")
    try:
        character = slow.open_character(sorted(character_dir.glob("*.glb"))[0])
        spec = specs(character, 1, resolution=(512, 768))[1]
        with pytest.raises(WorkerFailed) as error:
            slow.render(spec)
        reason, logs = str(error.value), error.value.logs
        assert "failed 2 times" in reason and "hung" in reason
        assert len(logs) == 2 and all(log in reason and Path(log).is_file() for log in logs)
        started = time.monotonic()
        with pytest.raises(WorkerFailed):
            slow.render(spec)
        assert time.monotonic() - started < 1.0
    finally:
        slow.close()


@pytest.mark.parametrize("runner", ["local", pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_a_blender_that_cannot_start_stops_the_job_naming_its_log(tmp_path, character_dir, monkeypatch, capsys,
                                                                  runner, ray_shut_down_after):
    """bpy that fails to import (a missing system library) blames the machine, not the assets:
    the job stops with the worker's log named instead of rejecting every character."""
    from ray_jobs.cli import main
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "bpy.py").write_text("raise ImportError('libXrender.so.1: cannot open shared object file')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    folder = tmp_path / "characters"
    folder.mkdir()
    for path in sorted(character_dir.glob("*.glb"))[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    code = main(["render", "--out", str(tmp_path / "job"), "--backend", "blender", "--engine", "workbench",
                 "--runner", runner, "--quiet", "--set", f"characters.source={folder}", "--set",
                 "poses_per_character=2", "--set", "resolution=[128, 192]", "--set", "blender.tries=2"])
    message = capsys.readouterr().err
    assert code == 2 and "did not start" in message
    logs = [Path(word.rstrip(")")) for word in message.replace(";", " ").split() if word.endswith(".log)")]
    assert logs and all("libXrender" in log.read_text() for log in logs)
    assert not list((tmp_path / "job" / "pairs").glob("*.tar"))  # nothing written as if it were the assets' fault


def test_scratch_left_by_a_killed_client_is_removed_by_the_next(character_dir):
    import tempfile
    from render.backends.blender_backend import SCRATCH_PREFIX
    finished = subprocess.Popen(["true"])  # its pid no longer runs once waited for
    finished.wait()
    gone_pid = finished.pid
    stale = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{gone_pid}-"))
    (stale / "rgba.png").write_bytes(b"left behind")
    live = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getppid()}-"))
    workbench = blender()
    try:
        workbench.open_character(sorted(character_dir.glob("*.glb"))[0])
        assert not stale.exists() and live.exists()
    finally:
        workbench.close()
        live.rmdir()


@pytest.mark.slow
def test_workers_are_recycled_after_n_characters(character_dir):
    files = sorted(character_dir.glob("*.glb"))
    workbench = blender(recycle_after=2)
    try:
        pids = []
        for path in files[:3]:
            workbench.open_character(path)
            pids.append(workbench.worker_pid)
        assert pids[0] == pids[1] != pids[2]
    finally:
        workbench.close()


@pytest.mark.slow
def test_render_job_on_blender_writes_checked_shards_and_rejects_a_broken_asset(tmp_path, character_dir):
    from ray_jobs.cli import main
    from shards.inspect import inspect_dataset
    from shards.reader import iter_dataset

    folder = tmp_path / "characters"
    folder.mkdir()
    for path in sorted(character_dir.glob("*.glb"))[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.fbx").write_bytes(b"Kaydara FBX Binary  \x00" + b"\x00" * 64)
    code = main(["render", "--out", str(tmp_path / "job"), "--backend", "blender", "--engine", "workbench",
                 "--runner", "local", "--quiet", "--set", f"characters.source={folder}", "--set",
                 "poses_per_character=2", "--set", "resolution=[256, 384]"])
    assert code == 0
    assert inspect_dataset(tmp_path / "job").ok
    manifest = json.loads(next((tmp_path / "job" / "pairs").glob("*.tar")).with_suffix(".json").read_text())
    assert manifest["status"] == {"ok": 6, "rejected": 2}
    assert all("broken.fbx" in r["error"] for r in manifest["rejects"])
    width, height = 256, 384
    view = StandardView()
    inside = total = 0
    for record in iter_dataset(tmp_path / "job" / "pairs"):
        meta = record["json"]
        assert meta["renderer"]["name"] == "blender"
        x0, y0, x1, y1 = meta["std"]["face_box"]
        assert abs((x0 + x1) / 2 - view.face_center[0] * width) <= 2
        assert abs((y0 + y1) / 2 - view.face_center[1] * height) <= 2
        assert abs((y1 - y0) / (view.head_height * height) - 1) <= 0.03
        alpha = np.asarray(record["src.png"])[..., 3]
        for x, y, visible in meta["src"]["keypoints"]:
            if visible:
                total += 1
                inside += alpha[int(y), int(x)] > 0
    assert inside / total >= 0.98


@pytest.mark.slow
def test_a_killed_job_takes_its_busy_blender_worker_with_it(character_dir):
    """SIGKILL on the job's process (a Ray worker killed by its watchdog, an OOM kill) in the
    middle of a long render leaves no Blender process behind."""
    job = subprocess.Popen([sys.executable, "-c", (
        "import sys\n"
        "from render.backends.blender_backend import BlenderBackend\n"
        "from render.backends.settings import BlenderSettings\n"
        "from render.spec import StandardView, standard_spec\n"
        "b = BlenderBackend(BlenderSettings(samples=100000, denoiser='NONE'))\n"
        "c = b.open_character(sys.argv[1])\n"
        "print(b.worker_pid, flush=True)\n"
        "b.render(standard_spec(StandardView(), c.id, 'x', (512, 768)))\n"), str(sorted(character_dir.glob("*.glb"))[0])],
        stdout=subprocess.PIPE, text=True)
    worker = int(job.stdout.readline())
    time.sleep(1.0)  # the worker is now path tracing, for minutes
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z":  # exited, not yet reaped
                break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail(f"the Blender worker {worker} outlived its job")
