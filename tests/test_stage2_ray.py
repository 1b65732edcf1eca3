"""``pairforge train stage2 --workers 2`` on Ray Train: two CPU workers (gloo DDP) train the tiny
IP-Adapter on mixed-bucket batches (each group's backward but the last without gradient sync),
each reading its own pairs, and rank 0's final adapter loads into a stock SDXL pipeline."""
import json

import pytest

from ray_jobs.cli import main
from tests.tools.stage2_data import make_stage2_data

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_ray_train_two_workers(tmp_path, monkeypatch, ray_shut_down_after):
    from diffusers import StableDiffusionXLPipeline

    from train.models.personalizer import ADAPTER_FILE

    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
    data = make_stage2_data(tmp_path / "data")
    out, base = tmp_path / "run", data / "base"
    code = main(["train", "stage2", "--data", str(data / "real_pairs"), "--out", str(out), "--config", "stage2-tiny",
                 "--set", f"base={base}", "--set", f"image_encoder={base / 'ip_image_encoder'}",
                 "--set", 'image_encoder_subfolder=""', "--set", "steps=2", "--set", "checkpoint_every=2",
                 "--set", "batch_size=3", "--set", "buckets=[[80, 80], [96, 64]]", "--set", "validation_samples=0",
                 "--workers", "2", "--cpus-per-worker", "0.5", "--quiet"])
    assert code == 0
    ranks = [json.loads((out / "ranks" / f"rank-{r}.json").read_text())["keys"] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6  # 2 steps x batch 3 on each rank
    assert (out / "checkpoints" / "step-000002" / "training_state.pt").exists()
    pipe = StableDiffusionXLPipeline.from_pretrained(base)
    pipe.load_ip_adapter(str(out / "final"), subfolder="", weight_name=ADAPTER_FILE)
    assert len(pipe.unet.encoder_hid_proj.image_projection_layers) == 1
