"""``pairforge train stage1 --workers 2`` on Ray Train: two CPU workers (gloo DDP) train the tiny
standardizer for a few steps, each reading its own shards (the loader's resampled plan gives each
rank its own part of them), and the checkpoint they write is one that ``pairforge standardize``
loads and runs."""
import json

import pytest

from ray_jobs.cli import main
from shards.reader import iter_dataset
from tests.tools.stage1_data import make_stage1_data

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_ray_train_two_workers_then_standardize(tmp_path, monkeypatch, ray_shut_down_after):
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
    data = make_stage1_data(tmp_path / "data")
    out = tmp_path / "run"
    base = data / "base"
    code = main(["train", "stage1", "--data", str(data / "composited"), "--out", str(out), "--config", "stage1-tiny",
                 "--set", f"base={base}", "--set", f"image_encoder={base / 'image_encoder'}", "--set", "steps=2",
                 "--set", "checkpoint_every=2", "--workers", "2", "--cpus-per-worker", "0.5", "--quiet"])
    assert code == 0
    ranks = [json.loads((out / "ranks" / f"rank-{r}.json").read_text())["keys"] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4 and set(ranks[0]).isdisjoint(ranks[1])  # 2 steps x 2; own shards
    assert (out / "checkpoints" / "step-000002" / "training_state.pt").exists()
    code = main(["standardize", "--checkpoint", str(out / "checkpoints" / "step-000002"), "--in",
                 str(data / "composited"), "--out", str(tmp_path / "std"), "--runner", "local", "--quiet",
                 "--set", "gpus=0", "--set", "steps=2", "--set", "guidance_scale=1"])
    assert code == 0
    assert len(list(iter_dataset(tmp_path / "std"))) == 12
