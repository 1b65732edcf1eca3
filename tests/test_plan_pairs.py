"""``pairforge plan`` on a pairs config: it is told from a render config, runs a pilot with
stand-ins for what this machine lacks (a tiny untrained standardizer, a tiny Qwen2-VL, the CPU,
the demo's shipped photos) and says so, and projects the cost per pair, hours and storage."""
import json

import pytest

from ray_jobs.plan import is_pairs_config


def test_pairs_and_render_configs_are_told_apart():
    assert is_pairs_config("configs/pairs-300k.yaml") and is_pairs_config("pairs-tiny")
    assert not is_pairs_config("demo") and not is_pairs_config(None)


@pytest.mark.slow
def test_plan_projects_a_pairs_config_from_a_pilot(capsys, monkeypatch):
    from ray_jobs.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # Qwen2-VL-2B is not here: fail fast, stand in the tiny one
    assert main(["plan", "--config", "configs/pairs-300k.yaml", "--pilot", "3", "--set", "standardize.steps=2",
                 "--set", "standardize.batch_size=2", "--nodes", "4", "--cores-per-node", "8"]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])
    assert "stand-in: checkpoint runs/stage1/final is not here: a tiny UNTRAINED standardizer" in out
    assert "stand-in: caption model Qwen/Qwen2-VL-2B-Instruct is not here: a tiny Qwen2-VL stands in" in out
    assert figures["kind"] == "pairs" and figures["pilot_pairs"] == 3 and figures["pairs"] == 300_000
    per_pair = figures.get("gpu_seconds_per_pair", figures["core_seconds_per_pair"])
    hours = figures.get("gpu_hours", figures.get("core_hours"))
    assert per_pair > 0 and hours == pytest.approx(per_pair * 300_000 / 3600, rel=0.01, abs=0.1)
    assert set(figures["seconds_per_pair_by_phase"]) == {"standardize", "caption", "gate"}
    # The pilot's references are 512x768 PNGs (ref_size) next to the curated JPEGs: storage follows.
    assert figures["bytes_per_pair"] > 100_000 and figures["storage_tb"] == pytest.approx(
        figures["bytes_per_pair"] * 300_000 / 1e12, rel=0.01)
    assert "per pair" in out and "projected for 300,000 pairs" in out
