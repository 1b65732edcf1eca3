"""``pairforge bench``: measured figures with their baseline from the same run. The last line
printed is one JSON object."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _naive_pair(config, item: dict) -> dict:
    """One self-contained call per sample, as a first script would do it: a fresh renderer, the
    character re-read from its .glb and uploaded again, the standard view rendered again."""
    from render.stage import RenderStage

    stage = RenderStage(config)
    stage.setup()
    try:
        return stage.process_batch([item])[0]
    finally:
        stage.teardown()


def _engine_settings(blender) -> dict:
    """The render settings that the engine in use reads (see render.backends.blender_worker)."""
    if blender.engine == "CYCLES":
        return {"engine": blender.engine, "samples": blender.samples, "denoiser": blender.denoiser,
                "denoising_prefilter": blender.denoising_prefilter, "device": blender.device}
    if blender.engine == "BLENDER_EEVEE":
        return {"engine": blender.engine, "taa_samples": blender.samples}
    from render.backends.settings import WORKBENCH
    return {"engine": blender.engine, **WORKBENCH}


def bench_render(characters: int = 8, poses: int = 16, resolution=(512, 768), naive_samples: int = 24,
                 backend: str = "pyrender", engine: str | None = None) -> dict:
    """Pairs/s into shards the way the render stage works (one renderer, a character loaded once,
    its standard view rendered once) against the naive loop over a spread of the same samples.
    With the blender backend the naive loop starts one Blender process per sample, as
    Objaverse-XL's scripts do, with the same render settings."""
    from ray_jobs.config import config_hash, load_config
    from ray_jobs.local import run_local
    from ray_jobs.shardwork import plan_shards
    from render.config import RenderConfig
    from render.procedural import generate_characters
    from render.stage import RenderStage, plan_items
    from shards.schema import SYNTHETIC_PAIR
    from shards.writer import ShardWriter, package_versions

    overrides = [f"characters.count={characters}", f"poses_per_character={poses}",
                 f"resolution=[{resolution[0]}, {resolution[1]}]", f"backend={backend}"]
    config = load_config(RenderConfig, "demo", overrides + ([f"blender.engine={engine}"] if engine else []))
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-") as tmp:
        tmp = Path(tmp)
        files = [str(p) for p in generate_characters(tmp / "characters", characters, config.characters.seed)]
        items = plan_items(config, files)
        versions = package_versions("pyrender" if backend == "pyrender" else "bpy")
        # Both loops run in this process, which imports pyrender (and trimesh, scipy) once: ~1.5 s
        # here, timed apart so that it is charged to neither.
        started = time.perf_counter()
        if backend == "pyrender":
            from render.backends.pyrender_backend import import_pyrender
            import_pyrender()
        import_seconds = time.perf_counter() - started
        started = time.perf_counter()
        summary = run_local(RenderStage(config), plan_shards(items, config.samples_per_shard), tmp / "fast",
                            SYNTHETIC_PAIR, config_hash(config), versions, config.batch_size, progress=False)
        fast_seconds = time.perf_counter() - started
        # The naive loop over a spread of the same samples (every k-th), into one shard.
        step = max(1, len(items) // naive_samples)
        naive_items = items[::step][:naive_samples]
        started = time.perf_counter()
        with ShardWriter(tmp / "naive", "shard-000000", SYNTHETIC_PAIR, config_hash(config), versions) as writer:
            for item in naive_items:
                writer.write(_naive_pair(config, item))
        naive_seconds = time.perf_counter() - started
    fast_rate = summary.done / fast_seconds
    naive_rate = len(naive_items) / naive_seconds
    settings = {} if backend == "pyrender" else _engine_settings(config.blender)
    return {"benchmark": "render", "backend": config.backend, **settings, "resolution": list(config.resolution),
            "pairs": summary.done, "seconds": round(fast_seconds, 2), "pairs_per_s": round(fast_rate, 2),
            "naive_pairs": len(naive_items), "naive_seconds": round(naive_seconds, 2),
            "naive_pairs_per_s": round(naive_rate, 2), "ratio": round(fast_rate / naive_rate, 2),
            "import_seconds": round(import_seconds, 2), "cpus": os.cpu_count()}


def bench_ray(characters: int = 8, poses: int = 16, resolution=(512, 768), workers: int | None = None) -> dict:
    """The demo workload on the local runner and on embedded Ray, same machine, same run. Ray's
    one-off costs are reported apart: starting Ray, and starting the job's workers (Ray Data's
    executor and actor pool, the stage's imports and set-up) until the first shard begins, set
    against the local runner's own set-up. ``ratio`` compares the work from the first shard on;
    ``ratio_total`` everything after Ray is up."""
    from ray_jobs.config import load_config
    from ray_jobs.jobs import run_render
    from render.config import RenderConfig

    config = load_config(RenderConfig, "demo", [f"characters.count={characters}", f"poses_per_character={poses}",
                                                 f"resolution=[{resolution[0]}, {resolution[1]}]"])
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-") as tmp:
        local = run_render(config, Path(tmp) / "local", runner="local", progress=False)
        on_ray = run_render(config, Path(tmp) / "ray", runner="ray", workers=workers, progress=False)
        same = all((Path(tmp) / "local/pairs" / p.name).read_bytes() == p.read_bytes()
                   for p in (Path(tmp) / "ray/pairs").glob("*.tar"))
    local_work, ray_work = local.seconds - local.setup_seconds, on_ray.seconds - on_ray.setup_seconds
    return {"benchmark": "ray", "pairs": on_ray.done, "local_seconds": round(local.seconds, 2),
            "local_setup_seconds": round(local.setup_seconds, 2), "local_work_seconds": round(local_work, 2),
            "ray_startup_seconds": round(on_ray.startup_seconds, 2), "ray_seconds": round(on_ray.seconds, 2),
            "ray_setup_seconds": round(on_ray.setup_seconds, 2), "ray_work_seconds": round(ray_work, 2),
            "ratio": round(ray_work / local_work, 3), "ratio_total": round(on_ray.seconds / local.seconds, 3),
            "same_bytes": same, "cpus": os.cpu_count(), "workers": workers or "default"}


def _naive_composite(rgba, background, placement, keypoints):
    """The straightforward PIL way: resize the whole frame, paste onto a transparent canvas,
    alpha_composite over the background, and read the mask back from the canvas."""
    from PIL import Image

    from render.compositing.composite import pose_image

    h, w = background.shape[:2]
    size = (round(rgba.shape[1] * placement.scale), round(rgba.shape[0] * placement.scale))
    source = Image.fromarray(rgba, "RGBA").resize(size, Image.BILINEAR)
    canvas = Image.new("RGBA", (w, h))
    canvas.paste(source, placement.offset)
    image = Image.alpha_composite(Image.fromarray(background).convert("RGBA"), canvas).convert("RGB")
    bg_mask = 255 - np.asarray(canvas.getchannel("A"))
    moved = placement.move(keypoints, (w, h))
    return np.asarray(image), bg_mask, pose_image(moved, (w, h))


def bench_composite(samples: int = 200, resolution=(512, 768)) -> dict:
    """Composites per second on one core: ours (alpha-box crop, integer blend in the box only)
    against the naive PIL pipeline, on the same real renders, backgrounds and placements."""
    from render.backends import make_backend
    from render.compositing.backgrounds import procedural_background
    from render.characters import load_character
    from render.compositing.composite import (
        CompositeConfig,
        alpha_box,
        composite,
        pose_image,
        sample_placement,
    )
    from shards.encoding import encode_jpeg, encode_png
    from render.procedural import generate_characters
    from render.spec import SamplingRanges, sample_source_spec

    backend = make_backend("pyrender")
    sources = []
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-") as tmp:
        for path in generate_characters(tmp, 4, seed=0):
            character = load_character(path)
            backend.load(character)
            for k in range(4):
                spec = sample_source_spec(SamplingRanges(), k, 0, character.id, path.name, k, 0,
                                          character.expressions, tuple(resolution))
                result = backend.render(spec)
                sources.append((result["rgba"], result["keypoints"]))
    backend.close()
    backgrounds = [procedural_background(i, tuple(resolution)) for i in range(16)]
    import cv2
    cv2.setNumThreads(1)  # a per-core figure
    config = CompositeConfig(shadow=0.0, feather_px=0.0)  # the naive pipeline has neither
    rng = np.random.default_rng(0)
    work = []
    for i in range(samples):
        rgba, keypoints = sources[i % len(sources)]
        work.append((rgba, backgrounds[i % len(backgrounds)], sample_placement(rng, rgba[..., 3], tuple(resolution),
                                                                               config), keypoints))

    def ours(rgba, background, placement, keypoints):
        out = composite(rgba, background, placement, config, alpha_box(rgba[..., 3]))
        return out["image"], out["bg_mask"], pose_image(placement.move(keypoints, tuple(resolution)),
                                                        tuple(resolution))

    rates = {}
    for name, fn in (("naive", _naive_composite), ("ours", ours)):
        started = time.perf_counter()
        for args in work:
            fn(*args)
        rates[name] = samples / (time.perf_counter() - started)
    started = time.perf_counter()
    for args in work[:50]:
        image, mask, pose = ours(*args)
        encode_jpeg(image, 95), encode_png(mask), encode_png(pose)
    with_encoding = 50 / (time.perf_counter() - started)
    full = CompositeConfig()  # with the default soft edge and ground shadow
    started = time.perf_counter()
    for rgba, background, placement, keypoints in work[:100]:
        composite(rgba, background, placement, full)
    return {"benchmark": "composite", "resolution": list(resolution), "samples": samples, "threads": 1,
            "composites_per_s": round(rates["ours"], 1), "naive_composites_per_s": round(rates["naive"], 1),
            "ratio": round(rates["ours"] / rates["naive"], 2),
            "with_soft_edge_and_shadow_per_s": round(100 / (time.perf_counter() - started), 1),
            "with_jpeg_png_encoding_per_s": round(with_encoding, 1)}
