"""``pairforge bench train stage1`` (and ``train router`` and ``train stage2``, below): Stage I training samples/s of the tiny standardizer at
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


def _figures(model: str, label: str, resolution: tuple[int, int], batch_size: int, steps: int, fed: float,
             in_memory: float, **extra) -> dict:
    """The named figures of one bench (``extra`` after the resolution), and its summary line printed
    (``label``: the model and size as the line names them)."""
    import torch

    samples = steps * batch_size
    figures = {"model": model, "resolution": list(resolution), **extra, "batch_size": batch_size, "steps": steps,
               "torch_threads": torch.get_num_threads(), "loader_workers": 1,
               "loader_fed_samples_per_s": round(samples / fed, 2), "preloaded_samples_per_s": round(samples / in_memory, 2),
               "s_per_step_loader_fed": round(fed / steps, 3), "s_per_step_preloaded": round(in_memory / steps, 3),
               "loader_overhead_ratio": round(fed / in_memory, 3)}
    print(f"{label}, batch {batch_size}: {figures['loader_fed_samples_per_s']} samples/s fed by the loader, "
          f"{figures['preloaded_samples_per_s']} on pre-loaded batches (x{figures['loader_overhead_ratio']} time)")
    return figures


def bench_train_stage1(steps: int = 10, warmup: int = 2, resolution: tuple[int, int] = (128, 192),
                       batch_size: int = 2) -> dict:
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
    return _figures("tiny standardizer", f"tiny standardizer at {resolution[0]}x{resolution[1]}", resolution,
                    batch_size, steps, fed, in_memory)


def bench_train_router(steps: int = 10, warmup: int = 2, batch_size: int = 4) -> dict:
    """``pairforge bench train router``: the tiny router (configs/router-tiny.yaml, 64x96 scenes of 2-4
    subjects, ReferenceNet on) fed by the loader (router_sample shards decoded in a DataLoader
    worker) against pre-loaded batches."""
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
    return _figures("tiny router (ReferenceNet on)", f"tiny router at {resolution[0]}x{resolution[1]}", resolution,
                    batch_size, steps, fed, in_memory)


def real_pairs_from_renders(pairs_dir: Path, out: Path, per_shard: int = 4) -> int:
    """Stand-in real_pair shards (shards.writer + REAL_PAIR) in ``out`` from the synthetic_pair shards
    in ``pairs_dir``, for Stage II's bench and tests without the pairs job: each character's
    standardized render as the reference; as the "photo", its source render on a flat colour, resized
    to 80x120, 96x96 or 120x80 in turn (so aspect buckets are exercised); the render's split kept."""
    import json

    import numpy as np
    from PIL import Image

    from shards.encoding import encode_jpeg, encode_png
    from shards.reader import iter_dataset
    from shards.schema import REAL_PAIR
    from shards.writer import ShardWriter

    records = sorted(iter_dataset(pairs_dir), key=lambda r: r["__key__"])
    for start in range(0, len(records), per_shard):
        with ShardWriter(out, f"shard-{start // per_shard:06d}", REAL_PAIR, "from-renders") as writer:
            for i, record in enumerate(records[start:start + per_shard], start):
                src = record["src.png"]
                alpha = src[..., 3:4].astype(np.float32) / 255
                colour = np.array([(37 * i) % 200 + 30, (91 * i) % 200 + 30, (53 * i) % 200 + 30], np.float32)
                scene = np.round(src[..., :3] * alpha + colour * (1 - alpha)).astype(np.uint8)
                photo = np.asarray(Image.fromarray(scene).resize(((80, 120), (96, 96), (120, 80))[i % 3], Image.BICUBIC))
                meta = {"schema": REAL_PAIR.tag, "photo_id": record["__key__"], "split": record["json"]["split"]}
                writer.write({"__key__": record["__key__"], "ref.png": encode_png(record["std.png"]),
                              "target.jpg": encode_jpeg(photo), "txt": f"a character, pose {i}".encode(),
                              "json": json.dumps(meta).encode()})
    return len(records)


def bench_train_stage2(steps: int = 10, warmup: int = 2, batch_size: int = 4) -> dict:
    """``pairforge bench train stage2``: the tiny IP-Adapter (configs/stage2-tiny.yaml, 64x96 with buckets
    80x80 and 96x64, so batches mix shapes) fed by the loader (real_pair shards decoded in a
    DataLoader worker) against pre-loaded batches."""
    from ray_jobs.config import load_config
    from ray_jobs.jobs import RunOptions, run_render
    from render.config import RenderConfig
    from train.models.tiny import build_tiny_sdxl_pipeline
    from train.stage2 import Stage2Config, Trainer

    resolution = (64, 96)
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-stage2-") as scratch:
        work = Path(scratch)
        run_render(load_config(RenderConfig, "demo", ["characters.count=4", "poses_per_character=4",
                                                      f"resolution=[{resolution[0]}, {resolution[1]}]"]),
                   work, RunOptions(runner="local", progress=False))
        real_pairs_from_renders(work / "pairs", work / "real_pairs")
        base = build_tiny_sdxl_pipeline(work / "base")
        config = load_config(Stage2Config, "stage2-tiny", [
            f"base={base}", f"image_encoder={base / 'ip_image_encoder'}", 'image_encoder_subfolder=""',
            "buckets=[[80, 80], [96, 64]]", f"batch_size={batch_size}", "num_workers=1", "validation_samples=0"])
        trainer = Trainer(config, str(work / "real_pairs"), work / "run")
        fed, in_memory = _fed_and_preloaded(trainer, steps, warmup)
    return _figures("tiny IP-Adapter on the tiny SDXL base", f"tiny IP-Adapter at {resolution[0]}x{resolution[1]} "
                    "(+2 buckets)", resolution, batch_size, steps, fed, in_memory, buckets=[[80, 80], [96, 64]])
