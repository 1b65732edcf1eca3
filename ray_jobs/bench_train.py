"""``pairforge bench train stage1`` (and ``train router``, below): Stage I training samples/s of the tiny standardizer at
128x192 on this machine, fed by the real loader (shards read, composited on the fly, decoded, in a
DataLoader worker), against the same number of steps on batches pre-loaded in memory: their ratio
is the loader's overhead. The last line printed is one JSON object."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path


def _fed_and_preloaded(trainer, steps: int, warmup: int) -> tuple[float, float]:
    """Seconds for ``steps`` training steps fed by the trainer's loader, then on as many batches pre-loaded."""
    batches = iter(trainer.loader)
    for _ in range(warmup):
        trainer.train_step(next(batches))
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(batches))
    fed = time.perf_counter() - started
    preloaded = [next(batches) for _ in range(steps)]
    started = time.perf_counter()
    for batch in preloaded:
        trainer.train_step(batch)
    return fed, time.perf_counter() - started


def bench_train_stage1(steps: int = 10, warmup: int = 2, resolution: tuple[int, int] = (128, 192),
                       batch_size: int = 2) -> dict:
    import torch

    from ray_jobs.config import load_config
    from ray_jobs.jobs import RunOptions, run_render
    from render.config import RenderConfig
    from train.models.tiny import build_tiny_base
    from train.stage1 import Stage1Config, Trainer

    with tempfile.TemporaryDirectory(prefix="pairforge-bench-train-") as scratch:
        work = Path(scratch)
        render = load_config(RenderConfig, "demo", ["characters.count=4", "poses_per_character=4",
                                                    f"resolution=[{resolution[0]}, {resolution[1]}]"])
        run_render(render, work, RunOptions(runner="local", progress=False))
        base = build_tiny_base(work / "base")
        config = load_config(Stage1Config, "stage1-tiny", [
            f"base={base}", f"image_encoder={base / 'image_encoder'}", f"resolution=[{resolution[0]}, {resolution[1]}]",
            f"batch_size={batch_size}", "num_workers=1", "validation_samples=0", "procedural_count=50"])
        trainer = Trainer(config, str(work / "pairs"), work / "run")
        fed, in_memory = _fed_and_preloaded(trainer, steps, warmup)
    samples = steps * batch_size
    figures = {"model": "tiny standardizer", "resolution": list(resolution), "batch_size": batch_size, "steps": steps,
               "torch_threads": torch.get_num_threads(), "loader_workers": 1,
               "loader_fed_samples_per_s": round(samples / fed, 2), "preloaded_samples_per_s": round(samples / in_memory, 2),
               "s_per_step_loader_fed": round(fed / steps, 3), "s_per_step_preloaded": round(in_memory / steps, 3),
               "loader_overhead_ratio": round(fed / in_memory, 3)}
    print(f"tiny standardizer at {resolution[0]}x{resolution[1]}, batch {batch_size}: {figures['loader_fed_samples_per_s']} "
          f"samples/s fed by the loader, {figures['preloaded_samples_per_s']} on pre-loaded batches "
          f"(x{figures['loader_overhead_ratio']} time)")
    return figures


def bench_train_router(steps: int = 10, warmup: int = 2, batch_size: int = 4) -> dict:
    """``pairforge bench train router``: the tiny router (configs/router-tiny.yaml, 64x96 scenes of 2-4
    subjects, ReferenceNet on) fed by the loader (router_sample shards decoded in a DataLoader
    worker) against pre-loaded batches."""
    import torch

    from ray_jobs.config import load_config
    from ray_jobs.jobs import RunOptions, run_render, run_router_scenes
    from render.compositing.scenes import SceneConfig
    from render.config import RenderConfig
    from train.models.tiny import build_tiny_sdxl_base
    from train.router import RouterConfig, Trainer

    resolution = (64, 96)
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-router-") as scratch:
        work = Path(scratch)
        options = RunOptions(runner="local", progress=False)
        run_render(load_config(RenderConfig, "demo", ["characters.count=6", "poses_per_character=3",
                                                      f"resolution=[{resolution[0]}, {resolution[1]}]"]), work, options)
        run_router_scenes(load_config(SceneConfig, None, ["procedural_count=20", "scenes=32", "scenes_per_shard=8"]),
                          work, work / "router", options)
        base = build_tiny_sdxl_base(work / "base")
        config = load_config(RouterConfig, "router-tiny", [
            f"base={base}", f"image_encoder={base / 'image_encoder'}", 'image_encoder_subfolder=""',
            f"batch_size={batch_size}", "num_workers=1"])
        trainer = Trainer(config, str(work / "router"), work / "run")
        fed, in_memory = _fed_and_preloaded(trainer, steps, warmup)
    samples = steps * batch_size
    figures = {"model": "tiny router (ReferenceNet on)", "resolution": list(resolution), "batch_size": batch_size,
               "steps": steps, "torch_threads": torch.get_num_threads(), "loader_workers": 1,
               "loader_fed_samples_per_s": round(samples / fed, 2), "preloaded_samples_per_s": round(samples / in_memory, 2),
               "s_per_step_loader_fed": round(fed / steps, 3), "s_per_step_preloaded": round(in_memory / steps, 3),
               "loader_overhead_ratio": round(fed / in_memory, 3)}
    print(f"tiny router at {resolution[0]}x{resolution[1]}, batch {batch_size}: {figures['loader_fed_samples_per_s']} "
          f"samples/s fed by the loader, {figures['preloaded_samples_per_s']} on pre-loaded batches "
          f"(x{figures['loader_overhead_ratio']} time)")
    return figures
