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
                 backend: str = "pyrender", engine: str | None = None, characters_kind: str = "procedural") -> dict:
    """Pairs/s into shards the way the render stage works (one renderer, a character loaded once,
    its standard view rendered once) against the naive loop over a spread of the same samples.
    With the blender backend the naive loop starts one Blender process per sample, as
    Objaverse-XL's scripts do, with the same render settings. ``characters_kind`` "human" renders
    MakeHuman bodies (render.human) instead of the capsule figures."""
    from ray_jobs.config import config_hash, load_config
    from ray_jobs.jobs import generator
    from ray_jobs.local import run_local
    from ray_jobs.shardwork import ShardJob, plan_shards
    from render.config import RenderConfig
    from render.stage import RenderStage, plan_items
    from shards.schema import SYNTHETIC_PAIR
    from shards.writer import ShardWriter, package_versions

    overrides = [f"characters.count={characters}", f"poses_per_character={poses}",
                 f"resolution=[{resolution[0]}, {resolution[1]}]", f"backend={backend}"]
    config = load_config(RenderConfig, "demo", overrides + ([f"blender.engine={engine}"] if engine else []))
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-") as tmp:
        tmp = Path(tmp)
        files = [str(p) for p in generator(characters_kind)(tmp / "characters", characters, config.characters.seed)]
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
    return {"benchmark": "render", "backend": config.backend, **settings, "characters_kind": characters_kind,
            "resolution": list(config.resolution),
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
    """The two demo outputs hold the same shards, byte for byte. Curation records and the real pairs
    made from them are left out: they name their input photos, which the demo keeps inside each
    run's own output folder."""
    def tars(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for p in root.rglob("*.tar")
                      if p.relative_to(root).parts[0] not in ("curated", "real-pairs"))

    found = tars(a)
    return bool(found) and found == tars(b) and all((a / p).read_bytes() == (b / p).read_bytes() for p in found)


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


def bench_caption(images: int = 32, batch_size: int = 8, resolution=(512, 768), max_new_tokens: int = 24,
                  model: str | None = None) -> dict:
    """Captions per second through the caption stage (cache off) with ``batch_size`` images per
    generate call against one image per call, same model, same images, same run; and the share of
    the time spent decoding and resizing images on the CPU. The model is the tiny Qwen2-VL built
    here (its figures measure the pipeline, not Qwen2-VL-2B), or ``model``."""
    from curate.caption.config import CaptionConfig
    from curate.caption.models import model_identity
    from curate.caption.stage import CaptionStage
    from curate.caption.tiny import build_tiny_qwen2vl
    from ray_jobs.config import load_config
    from render.compositing.backgrounds import procedural_background
    from shards.encoding import encode_jpeg

    with tempfile.TemporaryDirectory(prefix="pairforge-bench-") as tmp:
        path = model or str(build_tiny_qwen2vl(Path(tmp) / "tiny-qwen2vl"))
        config = load_config(CaptionConfig, None, [f"model={path}", f"generation.max_new_tokens={max_new_tokens}"])
        identity = model_identity(config)
        items = [{"__key__": f"s{i:04d}", "inputs": [{"image.jpg": encode_jpeg(procedural_background(i, tuple(resolution)), 90),
                                                      "json": b"{}"}]} for i in range(images)]
        figures = {"benchmark": "caption", "model": "tiny-qwen2vl" if model is None else model, "images": images,
                   "resolution": list(resolution), "max_pixels": config.max_pixels,
                   "max_new_tokens": max_new_tokens, "device": None, "cpus": os.cpu_count()}
        for size in (batch_size, 1):
            stage = CaptionStage(config, "router_sample", identity).with_(batch_size=size)
            stage.setup()
            try:
                figures["device"] = str(stage.captioner.device)
                stage.process_batch(items[:size])  # warm-up: first-call allocations and kernels
                stage.seconds.clear()
                started = time.perf_counter()
                for i in range(0, images, size):
                    stage.process_batch(items[i:i + size])
                seconds = time.perf_counter() - started
            finally:
                stage.teardown()
            figures[f"batch{size}_captions_per_s"] = round(images / seconds, 2)
            figures[f"batch{size}_preprocess_share"] = round(stage.seconds["prepare"] / seconds, 3)
    figures["batch_size"] = batch_size
    figures["ratio"] = round(figures[f"batch{batch_size}_captions_per_s"] / figures["batch1_captions_per_s"], 2)
    return figures


def _noise_records(count: int, resolution) -> list[dict]:
    """synthetic_pair records of random pixels (PNG cannot shrink them): shard bytes like real renders'."""
    import io
    import json

    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = resolution

    def png(channels: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8)).save(buffer, "PNG", compress_level=1)
        return buffer.getvalue()
    return [{"__key__": f"c{i:04d}-p0000-v0", "src.png": png(4), "std.png": png(3),
             "json": json.dumps({"character_id": f"c{i:04d}"}).encode()} for i in range(count)]


def bench_storage(shards: int = 8, records_per_shard: int = 16, resolution=(256, 384), endpoint: str | None = None) -> dict:
    """Shard write and read throughput to an S3 server against local disk, in the same run, and the
    safe reader's records/s streaming from S3 against local disk. Without ``endpoint`` a moto S3
    server is started on 127.0.0.1 in this process (it shares the process's cores and GIL)."""
    from shards import storage
    from shards.reader import iter_dataset
    from shards.schema import SYNTHETIC_PAIR
    from shards.writer import ShardWriter

    records = _noise_records(records_per_shard, resolution)
    server = None
    if endpoint is None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise RuntimeError("bench storage starts a local S3 server: pip install 'pairforge[dev]' (moto), "
                               "or give --endpoint of an S3-compatible server") from None
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(key, "bench")  # moto accepts any; a real endpoint uses the caller's own
        import logging
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        endpoint = "http://{}:{}".format(*server.get_host_and_port())
    storage.configure(endpoint_url=endpoint)
    bucket = f"s3://pairforge-bench-{os.getpid()}"
    import fsspec
    fsspec.filesystem("s3", endpoint_url=endpoint).mkdir(bucket.removeprefix("s3://"))
    figures: dict = {"shards": shards, "records": shards * records_per_shard, "endpoint": endpoint,
                     "server": "moto in this process" if server else "given"}
    try:
        with tempfile.TemporaryDirectory(prefix="pairforge-bench-") as scratch:
            for place, root in (("local", scratch), ("s3", f"{bucket}/shards")):
                started = time.perf_counter()
                total = 0
                for i in range(shards):
                    with ShardWriter(root, f"shard-{i:06d}", SYNTHETIC_PAIR, "bench") as writer:
                        for record in records:
                            writer.write(record)
                    total += writer.manifest["bytes"]
                write_s = time.perf_counter() - started
                started = time.perf_counter()
                raw = sum(len(storage.read_bytes(p)) for p in storage.glob(root, "*.tar"))
                read_s = time.perf_counter() - started
                started = time.perf_counter()
                count = sum(1 for _ in iter_dataset(root))  # streamed, every member decoded
                reader_s = time.perf_counter() - started
                assert raw == total and count == shards * records_per_shard
                figures.update({f"write_{place}_mb_s": round(total / write_s / 1e6, 1),
                                f"read_{place}_mb_s": round(raw / read_s / 1e6, 1),
                                f"reader_{place}_records_s": round(count / reader_s, 1)})
            figures["shard_mb"] = round(total / shards / 1e6, 2)
        for figure in ("write", "read"):
            figures[f"{figure}_s3_vs_local"] = round(figures[f"{figure}_s3_mb_s"] / figures[f"{figure}_local_mb_s"], 3)
        figures["reader_s3_vs_local"] = round(figures["reader_s3_records_s"] / figures["reader_local_records_s"], 3)
        figures["storage_retries"] = storage.retry_counts()
    finally:
        storage.remove_tree(bucket)
        if server is not None:
            server.stop()
    return figures
