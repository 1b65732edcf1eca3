"""``pairforge train router --workers 2`` on Ray Train: two CPU workers (gloo DDP) train the tiny
router for a few steps, each reading its own router samples, and the checkpoint they write is one
that ``pairforge segment`` loads and runs."""
import json

import pytest

from ray_jobs.cli import main
from tests.tools.router_data import make_router_data

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_ray_train_two_workers_then_segment(tmp_path, monkeypatch):
    from PIL import Image

    from shards.reader import iter_dataset

    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
    data = make_router_data(tmp_path / "data", scenes=16)
    out, base = tmp_path / "run", data / "base"
    code = main(["train", "router", "--data", str(data / "router"), "--out", str(out), "--config", "router-tiny",
                 "--set", f"base={base}", "--set", f"image_encoder={base / 'image_encoder'}",
                 "--set", 'image_encoder_subfolder=""', "--set", "steps=2", "--set", "checkpoint_every=2",
                 "--set", "batch_size=2", "--set", "validation_samples=0",
                 "--workers", "2", "--cpus-per-worker", "0.5", "--quiet"])
    assert code == 0
    ranks = [json.loads((out / "ranks" / f"rank-{r}.json").read_text())["keys"] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4  # 2 steps x batch 2 on each rank
    assert (out / "checkpoints" / "step-000002" / "training_state.pt").exists()
    record = next(iter(iter_dataset(data / "router")))
    Image.fromarray(record["image.jpg"]).save(tmp_path / "scene.jpg")
    Image.fromarray(record["subj0.png"]).save(tmp_path / "subject.png")
    code = main(["segment", "--router", str(out / "checkpoints" / "step-000002"), "--image", str(tmp_path / "scene.jpg"),
                 "--subjects", str(tmp_path / "subject.png"), "--out", str(tmp_path / "masks"), "--device", "cpu"])
    assert code == 0 and (tmp_path / "masks" / "mask-0.png").exists()
