"""The benchmark commands keep working and keep their contract: the last line printed is one
JSON object with the figure, its baseline from the same run, and the ratio (tiny workloads
here; the figures themselves come from running the commands, see docs/benchmarks.md)."""
import json

import pytest

from ray_jobs.cli import main


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_render_prints_rate_baseline_and_ratio(capsys):
    assert main(["bench", "render", "--characters", "1", "--poses", "3", "--resolution", "128x192",
                 "--naive-samples", "2"]) == 0
    figures = last_json(capsys)
    assert figures["backend"] == "pyrender" and figures["pairs"] == 3 and figures["naive_pairs"] == 2
    assert figures["pairs_per_s"] > 0 and figures["naive_pairs_per_s"] > 0 and figures["import_seconds"] >= 0
    assert figures["ratio"] == pytest.approx(figures["pairs_per_s"] / figures["naive_pairs_per_s"], rel=0.05)


@pytest.mark.blender
@pytest.mark.slow
def test_bench_render_on_blender_names_its_engine_settings(capsys):
    assert main(["bench", "render", "--backend", "blender", "--engine", "workbench", "--characters", "1",
                 "--poses", "2", "--resolution", "128x192", "--naive-samples", "1"]) == 0
    figures = last_json(capsys)
    assert figures["backend"] == "blender" and figures["engine"] == "BLENDER_WORKBENCH"
    assert figures["pairs"] == 2 and figures["ratio"] > 0


@pytest.mark.ray
@pytest.mark.slow
def test_bench_ray_times_the_demo_in_process_and_as_whole_processes(capsys, ray_shut_down_after):
    assert main(["bench", "ray", "--characters", "3", "--poses", "2", "--resolution", "128x192"]) == 0
    figures = last_json(capsys)
    assert figures["pairs"] == 6 and figures["same_bytes"] is True
    for stage in ("render", "composite"):
        assert 0 <= figures[f"{stage}_ray_setup_seconds"] <= figures[f"{stage}_ray_seconds"]
        assert figures[f"{stage}_local_seconds"] > 0
    stages = [k.removesuffix("_local_seconds") for k in figures if k.endswith("_local_seconds") and k != "local_seconds"]
    assert figures["local_seconds"] == pytest.approx(sum(figures[f"{s}_local_seconds"] for s in stages), abs=0.05)
    assert figures["ray_startup_seconds"] > 0
    assert figures["ratio_after_start"] == pytest.approx(figures["ray_seconds"] / figures["local_seconds"], rel=0.05)
    assert figures["ratio_process"] == pytest.approx(
        figures["ray_process_seconds"] / figures["local_process_seconds"], rel=0.05)
