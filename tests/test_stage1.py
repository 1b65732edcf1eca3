"""Stage I training (train/stage1.py) and ``standardize`` on tiny models: a run saved at step 2
and resumed gives, at step 4, the same weights as one never stopped (same batches through the
loader's state, same draws); validation writes PSNR/SSIM, a sample grid and TensorBoard logs;
standardize loads the checkpoint, writes standardized records at the sources' sizes carrying the
checkpoint's hash, and a re-run redoes nothing; a folder that is not a checkpoint, data of the
wrong record kind and resolutions the model cannot take stop before any work, saying what to change."""
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from ray_jobs.config import ConfigError, load_config
from ray_jobs.jobs import RunOptions
from ray_jobs.training import run_standardize, run_train_stage1
from shards.reader import iter_dataset
from tests.tools.stage1_data import make_stage1_data, tiny_stage1_config
from tests.tools.trained_run import data_and_trained_run
from train.standardize import StandardizeConfig

pytestmark = pytest.mark.slow
LOCAL = RunOptions(runner="local", progress=False)


data, trained = data_and_trained_run(make_stage1_data, run_train_stage1, tiny_stage1_config, "pairs",
                                     "steps=4", "checkpoint_every=2", "validation_samples=2")


def weights(folder):
    return {f"{m}/{k}": v for m in ("reference_unet", "denoising_unet", "pose_guider", "reference_adapter")
            for k, v in load_file(folder / m / "diffusion_pytorch_model.safetensors").items()}


def test_resumed_run_equals_uninterrupted(data, trained, tmp_path):
    out, result = trained
    assert result["step"] == 4 and all(loss == loss for loss in result["losses"])
    config = tiny_stage1_config(data, "steps=2", "checkpoint_every=2", "validation_samples=2")
    run_train_stage1(config, str(data / "pairs"), tmp_path, progress=False)
    resumed = run_train_stage1(dataclasses.replace(config, steps=4), str(data / "pairs"), tmp_path, progress=False)
    assert resumed["steps_run"] == 2 and resumed["losses"] == result["losses"][2:]
    a, b = weights(out / "checkpoints" / "step-000004"), weights(tmp_path / "checkpoints" / "step-000004")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], v) for k, v in weights(out / "checkpoints" / "step-000002").items())


def test_validation_writes_metrics_grid_and_logs(trained):
    from PIL import Image
    out, result = trained
    assert 0 < result["psnr"] < 60 and -1 <= result["ssim"] <= 1
    grid = Image.open(result["grid"])
    assert grid.size == (3 * 64, 2 * 96)  # source | generated | target, one row per held-out sample
    assert list((out / "logs").glob("events.out.tfevents.*"))
    identity = json.loads((out / "final" / "standardizer.json").read_text())
    assert len(identity["standard_pose"]) == 18 and identity["step"] == 4


def test_standardize_loads_the_checkpoint_and_resumes_by_shard(data, trained, tmp_path):
    out, _ = trained
    config = load_config(StandardizeConfig, None, [f"checkpoint={out / 'final'}", "gpus=0", "device=cpu", "steps=2",
                                                   "batch_size=4", "guidance_scale=2"])
    summary = run_standardize(config, data / "composited", tmp_path / "std", LOCAL)
    assert summary.done == 12 and summary.rejected == 0
    records = list(iter_dataset(tmp_path / "std"))
    sources = {r["__key__"]: r for r in iter_dataset(data / "composited")}
    identity = json.loads((out / "final" / "standardizer.json").read_text())
    for record in records:
        assert record["std.png"].shape == sources[record["__key__"]]["src.jpg"].shape
        assert record["json"]["checkpoint_sha256"] == identity["weights_sha256"]
    again = run_standardize(config, data / "composited", tmp_path / "std", LOCAL)
    assert again.shards_skipped == again.shards_total == 4  # every shard complete: nothing redone
    with pytest.raises(ConfigError, match="standardize reads one of composited_pair, synthetic_pair"):
        run_standardize(config, tmp_path / "std", tmp_path / "std2", LOCAL)
    with pytest.raises(ConfigError, match="train stage1 reads synthetic_pair or composited_pair"):
        run_train_stage1(tiny_stage1_config(data), str(tmp_path / "std"), tmp_path / "run", progress=False)


def test_errors_before_any_work(data, tmp_path):
    other = load_config(StandardizeConfig, None, [f"checkpoint={data / 'base'}", "gpus=0"])
    with pytest.raises(ConfigError, match="not a standardizer checkpoint"):
        run_standardize(other, data / "composited", tmp_path / "std", LOCAL)
    with pytest.raises(ConfigError, match=r"multiple of 16 for this UNet.*resolution=\[64, 96\]"):
        run_train_stage1(tiny_stage1_config(data, "resolution=[72, 96]"), str(data / "pairs"), tmp_path / "a")
    with pytest.raises(ConfigError, match="multiples of 8"):
        tiny_stage1_config(data, "resolution=[60, 96]")
    assert not (tmp_path / "std").exists() and not (tmp_path / "a").exists()
