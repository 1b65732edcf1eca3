"""``pairforge bench``: measured figures with their baseline from the same run. The last line
printed is one JSON object."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


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


def bench_render(characters: int = 8, poses: int = 16, resolution=(512, 768), naive_samples: int = 24) -> dict:
    from ray_jobs.config import config_hash, load_config
    from ray_jobs.local import plan_shards, run_local
    from render.config import RenderConfig
    from render.procedural import generate_characters
    from render.stage import RenderStage, plan_items
    from shards.schema import SYNTHETIC_PAIR
    from shards.writer import ShardWriter, package_versions

    config = load_config(RenderConfig, "demo", [f"characters.count={characters}", f"poses_per_character={poses}",
                                                 f"resolution=[{resolution[0]}, {resolution[1]}]"])
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-") as tmp:
        tmp = Path(tmp)
        files = [str(p) for p in generate_characters(tmp / "characters", characters, config.characters.seed)]
        items = plan_items(config, files)
        versions = package_versions("pyrender")
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
    return {"benchmark": "render", "backend": config.backend, "resolution": list(config.resolution),
            "pairs": summary.done, "seconds": round(fast_seconds, 2), "pairs_per_s": round(fast_rate, 2),
            "naive_pairs": len(naive_items), "naive_seconds": round(naive_seconds, 2),
            "naive_pairs_per_s": round(naive_rate, 2), "ratio": round(fast_rate / naive_rate, 2),
            "cpus": os.cpu_count()}


def bench_ray(characters: int = 8, poses: int = 16, resolution=(512, 768), workers: int | None = None) -> dict:
    """The demo workload on the local runner and on embedded Ray, same machine, same run. Ray's
    one-off start-up is reported apart from the work."""
    from ray_jobs.config import load_config
    from ray_jobs.render_job import run_render
    from render.config import RenderConfig

    config = load_config(RenderConfig, "demo", [f"characters.count={characters}", f"poses_per_character={poses}",
                                                 f"resolution=[{resolution[0]}, {resolution[1]}]"])
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-") as tmp:
        local = run_render(config, Path(tmp) / "local", runner="local", progress=False)
        on_ray = run_render(config, Path(tmp) / "ray", runner="ray", workers=workers, progress=False)
        same = all((Path(tmp) / "local/pairs" / p.name).read_bytes() == p.read_bytes()
                   for p in (Path(tmp) / "ray/pairs").glob("*.tar"))
    return {"benchmark": "ray", "pairs": on_ray.done, "local_seconds": round(local.seconds, 2),
            "ray_seconds": round(on_ray.seconds, 2), "ray_startup_seconds": round(on_ray.startup_seconds, 2),
            "ratio": round(on_ray.seconds / local.seconds, 3), "same_bytes": same, "cpus": os.cpu_count(),
            "workers": workers or "default"}
