"""Small router inputs made with the project's own jobs: 6 procedural characters x 3 poses at
64x96, router scenes of 2-4 of them (train and test splits by character), and the tiny router
base (the tiny SDXL-shaped base with a VAE whose latents carry the picture)."""
from __future__ import annotations

from pathlib import Path

SIZE = (64, 96)


def make_router_data(out: Path, scenes: int = 24) -> Path:
    from ray_jobs.config import load_config
    from ray_jobs.jobs import RunOptions, run_render, run_router_scenes
    from render.compositing.scenes import SceneConfig
    from render.config import RenderConfig
    from train.models.tiny import build_tiny_router_base

    options = RunOptions(runner="local", progress=False)
    config = load_config(RenderConfig, "demo", ["characters.count=6", "poses_per_character=3", "samples_per_shard=6",
                                                f"resolution=[{SIZE[0]}, {SIZE[1]}]"])
    run_render(config, out, options)
    run_router_scenes(load_config(SceneConfig, None, ["procedural_count=20", f"scenes={scenes}", "scenes_per_shard=8"]),
                      out, out / "router", options)
    build_tiny_router_base(out / "base")
    return out


def tiny_router_config(data: Path, *overrides: str):
    """The tiny config (configs/router-tiny.yaml) on the tiny base in ``data``."""
    from ray_jobs.config import load_config
    from train.router import RouterConfig

    return load_config(RouterConfig, "router-tiny", [f"base={data / 'base'}", f"image_encoder={data / 'base' / 'image_encoder'}",
                                                     'image_encoder_subfolder=""', *overrides])
