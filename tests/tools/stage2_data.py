"""Small Stage II inputs: real_pair shards written through the data contract from a render job's
pairs (ray_jobs.bench_train.real_pairs_from_renders: 4 procedural characters x 3 poses at 64x96,
photos in three aspect ratios; the render's split=test character stays test) and a tiny SDXL
pipeline folder with a 257-token image encoder."""
from __future__ import annotations

from pathlib import Path

SIZE = (64, 96)


def make_stage2_data(out: Path) -> Path:
    from ray_jobs.bench_train import real_pairs_from_renders
    from ray_jobs.config import load_config
    from ray_jobs.jobs import RunOptions, run_render
    from render.config import RenderConfig
    from train.models.tiny import build_tiny_sdxl_pipeline

    config = load_config(RenderConfig, "demo", ["characters.count=4", "poses_per_character=3", "samples_per_shard=3",
                                                f"resolution=[{SIZE[0]}, {SIZE[1]}]"])
    assert run_render(config, out, RunOptions(runner="local", progress=False)).done == 12
    real_pairs_from_renders(out / "pairs", out / "real_pairs")
    build_tiny_sdxl_pipeline(out / "base")
    return out


def tiny_stage2_config(data: Path, *overrides: str):
    """The tiny config (configs/stage2-tiny.yaml) on the tiny pipeline in ``data``."""
    from ray_jobs.config import load_config
    from train.stage2 import Stage2Config

    return load_config(Stage2Config, "stage2-tiny", [f"base={data / 'base'}", f"image_encoder={data / 'base' / 'ip_image_encoder'}",
                                                     'image_encoder_subfolder=""', *overrides])


def frozen_tensors(trainer) -> dict:
    """Copies of every tensor of a Stage II trainer's models that is not an adapter parameter."""
    adapter = {id(p) for p in trainer.parameters}
    modules = {"unet": trainer.unet, "vae": trainer.frozen.vae, "text_encoder": trainer.frozen.text_encoder,
               "text_encoder_2": trainer.frozen.text_encoder_2, "image_encoder": trainer.frozen.image_encoder}
    return {f"{m}.{name}": t.detach().clone() for m, module in modules.items()
            for name, t in [*module.named_parameters(), *module.named_buffers()] if id(t) not in adapter}
