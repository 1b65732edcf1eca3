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
    from ray_jobs.shardwork import ShardJob, plan_shards
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
        versions = package_versions(*RenderStage(config).packages)
        # Both loops run in this process, which imports pyrender (and trimesh, scipy) once: ~1.5 s
        # here, timed apart so that it is charged to neither.
        started = time.perf_counter()
        if backend == "pyrender":
            from render.backends.pyrender_backend import import_pyrender
            import_pyrender()
        import_seconds = time.perf_counter() - started
        started = time.perf_counter()
        stage = RenderStage(config)
        summary = run_local(stage, plan_shards(items, config.samples_per_shard),
                            ShardJob(str(tmp / "fast"), config_hash(config), versions), progress=False)
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


def _demo_process(out: Path, runner: str, characters: int, poses: int, resolution) -> float:
    """Wall seconds of a whole ``pairforge demo`` process, as a user waits for it."""
    import subprocess
    import sys

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ray_jobs.cli", "demo", "--out", str(out), "--runner", runner, "--quiet",
                    "--characters", str(characters), "--poses", str(poses),
                    "--resolution", f"{resolution[0]}x{resolution[1]}"],
                   check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - started


def _same_shards(a: Path, b: Path) -> bool:
    tars = sorted(p.relative_to(a) for p in a.rglob("*.tar"))
    return bool(tars) and tars == sorted(p.relative_to(b) for p in b.rglob("*.tar")) and \
        all((a / p).read_bytes() == (b / p).read_bytes() for p in tars)


def bench_ray(characters: int = 8, poses: int = 16, resolution=(512, 768), workers: int | None = None) -> dict:
    """The demo workload (render -> composite -> router scenes) on the local runner and on
    embedded Ray, same machine, same run, measured two ways: whole ``pairforge demo`` processes
    (``ratio_process``: interpreter start, Ray's start-up and shutdown included), then the three
    stages in this process (``ratio_after_start``: the stages' set-up and work once Ray is up;
    Ray's start-up reported apart)."""
    from ray_jobs.demo import run_demo
    from ray_jobs.jobs import RunOptions

    figures: dict = {"benchmark": "ray", "pairs": characters * poses, "resolution": list(resolution),
                     "cpus": os.cpu_count(), "workers": workers or "default"}
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-") as tmp:
        tmp = Path(tmp)
        local_process = _demo_process(tmp / "p-local", "local", characters, poses, resolution)
        ray_process = _demo_process(tmp / "p-ray", "ray", characters, poses, resolution)
        args = (characters, poses, tuple(resolution))
        local = run_demo(tmp / "local", RunOptions(runner="local", progress=False), *args)
        on_ray = run_demo(tmp / "ray", RunOptions(runner="ray", workers=workers, progress=False), *args)
        same = _same_shards(tmp / "local", tmp / "ray") and _same_shards(tmp / "p-local", tmp / "p-ray")
    import ray
    ray.shutdown()
    local_seconds = sum(s.seconds for s in local.summaries.values())
    ray_seconds = sum(s.seconds for s in on_ray.summaries.values())
    for name, summary in on_ray.summaries.items():
        figures[f"{name}_local_seconds"] = round(local.summaries[name].seconds, 2)
        figures[f"{name}_ray_seconds"] = round(summary.seconds, 2)
        figures[f"{name}_ray_setup_seconds"] = round(summary.setup_seconds, 2)
    figures.update({
        "ray_startup_seconds": round(sum(s.startup_seconds for s in on_ray.summaries.values()), 2),
        "local_seconds": round(local_seconds, 2), "ray_seconds": round(ray_seconds, 2),
        "ratio_after_start": round(ray_seconds / local_seconds, 3),
        "local_process_seconds": round(local_process, 2), "ray_process_seconds": round(ray_process, 2),
        "ratio_process": round(ray_process / local_process, 3), "same_bytes": same})
    return figures


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
