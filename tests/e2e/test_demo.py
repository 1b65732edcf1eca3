import shutil
import subprocess
import sys

import pytest

from ray_jobs.cli import main
from ray_jobs.config import read_resolved
from shards.inspect import inspect_dataset
from shards.reader import iter_dataset
from tests.helpers import make_unmappable, make_unskinned


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--characters", "3", "--poses", "4", "--resolution", "256x384",
                 "--quiet", "--runner", "local"]) == 0
    return out


def test_demo_writes_valid_shards_and_a_contact_sheet(demo_out, capsys):
    report = inspect_dataset(demo_out / "pairs")
    assert report.ok, report.problems
    assert report.records == 12 and report.rejects == 0
    composited = inspect_dataset(demo_out / "composited")
    assert composited.ok and composited.records == 12 and composited.schemas == {"composited_pair/1": 1}
    assert (demo_out / "contact_sheet.png").stat().st_size > 10_000
    assert (demo_out / "composite_sheet.png").stat().st_size > 10_000
    scenes = inspect_dataset(demo_out / "router")
    assert scenes.ok and scenes.records == 16 and scenes.schemas == {"router_sample/1": 1}
    assert (demo_out / "router_sheet.png").stat().st_size > 10_000
    assert (demo_out / "config.yaml").exists()
    assert main(["inspect", str(demo_out)]) == 0
    records = list(iter_dataset(demo_out / "pairs"))
    stds = {}
    for r in records:
        assert r["src.png"].shape == (384, 256, 4) and r["std.png"].shape == (384, 256, 3)
        stds.setdefault(r["json"]["character_id"], set()).add(r["std.png"].tobytes())
    assert all(len(s) == 1 for s in stds.values())  # one standardized render per character


def test_demo_ends_with_real_pairs_and_an_image_from_its_stage2_adapter(demo_out):
    from PIL import Image

    from train.models.personalizer import ADAPTER_FILE

    pairs = inspect_dataset(demo_out / "real-pairs")
    assert pairs.ok and pairs.records >= 1 and set(pairs.schemas) == {"real_pair/1"}
    assert (demo_out / "stage2" / "run" / "final" / ADAPTER_FILE).exists()
    with Image.open(demo_out / "stage2" / "generated.png") as image:
        assert image.size == (64, 96) and image.mode == "RGB"


@pytest.mark.slow
def test_rerun_skips_complete_shards_and_reproduces_bytes(demo_out, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in (demo_out / "pairs").glob("*.tar")}
    assert main(["demo", "--out", str(demo_out), "--characters", "3", "--poses", "4", "--resolution", "256x384",
                 "--quiet", "--runner", "local"]) == 0
    assert "already complete, skipped" in capsys.readouterr().out
    (demo_out / "pairs" / "shard-000000.json").unlink()  # as if the job died before the manifest
    assert main(["demo", "--out", str(demo_out), "--characters", "3", "--poses", "4", "--resolution", "256x384",
                 "--quiet", "--runner", "local"]) == 0
    assert {p.name: p.read_bytes() for p in (demo_out / "pairs").glob("*.tar")} == before


def test_a_changed_config_is_refused_before_any_work_unless_overwrite(demo_out, tmp_path, capsys):
    args = ["demo", "--out", str(demo_out), "--characters", "3", "--poses", "4", "--resolution", "128x192",
            "--quiet", "--runner", "local"]
    before = {p.name: p.stat().st_mtime_ns for p in (demo_out / "pairs").iterdir()}
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "another config" in error and "resolution: [256, 384] -> [128, 192]" in error and "--overwrite" in error
    assert {p.name: p.stat().st_mtime_ns for p in (demo_out / "pairs").iterdir()} == before  # nothing touched
    copy = tmp_path / "copy"
    shutil.copytree(demo_out, copy)
    assert main([*args[:2], str(copy), *args[3:], "--overwrite"]) == 0
    report = inspect_dataset(copy / "pairs")
    assert report.ok and set(report.image_sizes) == {(128, 192)}
    assert read_resolved(copy)["resolution"] == [128, 192]


def test_unknown_config_key_names_the_nearest(tmp_path, capsys):
    assert main(["render", "--out", str(tmp_path), "--set", "pose_cont=3"]) == 2
    assert "did you mean pose_count" in capsys.readouterr().err


def test_shards_read_in_plain_webdataset(demo_out):
    import webdataset as wds
    urls = sorted(str(p) for p in (demo_out / "pairs").glob("*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert len(samples) == 12
    assert samples[0]["src.png"].shape == (384, 256, 4) or samples[0]["src.png"].shape == (384, 256, 3)
    assert {"__key__", "src.png", "std.png", "json"} <= set(samples[0])


@pytest.mark.ray
@pytest.mark.slow
def test_shards_read_in_ray_data(demo_out):
    code = f"""
import glob, ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
ds = ray.data.read_webdataset(sorted(glob.glob("{demo_out}/pairs/*.tar")), decoder=None)
rows = ds.take_all()
print(len(rows), sorted(k for k in rows[0] if not k.startswith("__")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "12 ['json', 'src.png', 'std.png']"


def test_broken_characters_become_rejects_and_the_demo_finishes(tmp_path, character_dir, capsys):
    assets = tmp_path / "assets"
    assets.mkdir()
    good = sorted(character_dir.glob("*.glb"))
    for path in good[:2]:
        shutil.copy(path, assets / path.name)
    (assets / "zero.glb").write_bytes(b"")
    (assets / "corrupt.glb").write_bytes(good[0].read_bytes()[:3000])
    make_unskinned(good[0], assets)
    make_unmappable(good[0], assets)
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--characters-dir", str(assets), "--poses", "2",
                 "--resolution", "128x192", "--quiet", "--runner", "local"]) == 0
    report = inspect_dataset(out / "pairs")
    assert report.ok and report.records == 4 and report.rejects == 8
    reasons = " | ".join(report.reject_reasons)
    for expected in ("too short", "truncated", "no skinned mesh", "missing hips"):
        assert expected in reasons
    assert "rejected: 8" in capsys.readouterr().out


def test_status_of_a_half_finished_job(demo_out, tmp_path, capsys):
    copy = tmp_path / "half"
    shutil.copytree(demo_out, copy)
    (copy / "pairs" / "shard-000000.json").unlink()  # as if the job died before finishing it
    (copy / "pairs" / "shard-000000.123-abc.tar.tmp").write_bytes(b"partial")
    assert main(["status", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "0/1 shards complete (0/12 samples" in out
    assert "being written (or left by a dead worker): shard-000000" in out
    assert "left: 1 shards, 12 samples (shard-000000)" in out
    assert main(["status", str(demo_out)]) == 0
    assert "1/1 shards complete (12/12 samples: 12 written, 0 rejected)" in capsys.readouterr().out


def test_plan_projects_the_whole_job_from_a_pilot(capsys):
    import json
    assert main(["plan", "--config", "demo", "--pilot", "6", "--nodes", "2", "--cores-per-node", "4",
                 "--set", "resolution=[128, 192]"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["pilot_samples"] == 6 and figures["samples"] == 8 * 16 and figures["shards"] == 2
    assert figures["core_seconds_per_sample"] > 0 and figures["bytes_per_sample"] > 1000
    assert figures["core_hours"] == pytest.approx(figures["core_seconds_per_sample"] * 128 / 3600, abs=0.06)
    assert figures["wall_hours"] == pytest.approx(figures["core_hours"] / 8, abs=0.01)
