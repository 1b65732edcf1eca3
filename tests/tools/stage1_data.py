"""Small Stage I inputs made with the project's own jobs: 4 procedural characters x 3 poses at
64x96 (one of the four is in split=test), their composites, and a tiny base model folder."""
from __future__ import annotations

from pathlib import Path

SIZE = (64, 96)


def make_stage1_data(out: Path) -> Path:
    from ray_jobs.config import load_config
    from ray_jobs.jobs import RunOptions, run_composite, run_render
    from render.compositing.stage import CompositeJobConfig
    from render.config import RenderConfig
    from train.models.tiny import build_tiny_base

    options = RunOptions(runner="local", progress=False)
    config = load_config(RenderConfig, "demo", ["characters.count=4", "poses_per_character=3", "samples_per_shard=3",
                                                f"resolution=[{SIZE[0]}, {SIZE[1]}]"])
    assert run_render(config, out, options).done == 12
    run_composite(load_config(CompositeJobConfig, None, ["procedural_count=20"]), out, out / "composited", options)
    build_tiny_base(out / "base")
    return out


def tiny_stage1_config(data: Path, *overrides: str):
    """The tiny config (configs/stage1-tiny.yaml) on the tiny base in ``data``."""
    from ray_jobs.config import load_config
    from train.stage1 import Stage1Config

    return load_config(Stage1Config, "stage1-tiny", [f"base={data / 'base'}", f"image_encoder={data / 'base' / 'image_encoder'}",
                                                     "procedural_count=20", *overrides])
