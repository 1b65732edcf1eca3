"""``pairforge plan --config C --pilot N``: render N samples of the job for real, then project
core-hours, wall time on K nodes and storage for the whole config."""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

from ray_jobs.config import config_hash
from render.config import RenderConfig


def pilot_config(config: RenderConfig, pilot: int) -> RenderConfig:
    """The same job over just enough characters for the pilot (generating thousands is not needed)."""
    per_character = config.poses_per_character * config.views_per_pose
    count = min(config.characters.count, max(2, math.ceil(pilot / per_character)))
    return dataclasses.replace(config, characters=dataclasses.replace(config.characters, count=count))


def _cpu_seconds() -> float:
    """CPU time of this process (all threads: llvmpipe rasterizes on several) and of its finished
    children (the Blender workers, stopped when the stage tears down)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _renderer(config: RenderConfig) -> str:
    if config.backend == "blender":
        return f"Blender {config.blender.engine} at {config.blender.samples} samples"
    return "pyrender on llvmpipe"


def total_samples(config: RenderConfig, character_count: int) -> int:
    return character_count * config.poses_per_character * config.views_per_pose


def plan(config: RenderConfig, pilot: int, nodes: int, cores_per_node: int, character_count: int | None = None) -> dict:
    from ray_jobs.jobs import GENERATED, character_files
    from ray_jobs.local import run_local
    from ray_jobs.shardwork import ShardJob, plan_shards
    from render.stage import RenderStage, plan_items

    small = pilot_config(config, pilot)
    with tempfile.TemporaryDirectory(prefix="pairforge-plan-") as tmp:
        files = character_files(small, Path(tmp))
        if character_count is None:
            character_count = config.characters.count if config.characters.source in GENERATED else len(files)
        items = plan_items(small, files)
        step = max(1, len(items) // pilot)
        chosen = items[::step][:pilot]  # spread over the characters, so loading is counted as in the job
        started_wall, started_cpu = time.perf_counter(), _cpu_seconds()
        summary = run_local(RenderStage(small), plan_shards(chosen, small.samples_per_shard),
                            ShardJob(str(Path(tmp) / "pairs"), config_hash(small), {}), progress=False)
        wall, cpu = time.perf_counter() - started_wall, _cpu_seconds() - started_cpu
        stored = sum(p.stat().st_size for p in (Path(tmp) / "pairs").glob("*.tar"))
    n = summary.done + summary.rejected
    total = total_samples(config, character_count)
    core_seconds = cpu / n
    core_hours = core_seconds * total / 3600
    return {
        "pilot_samples": n, "pilot_rejected": summary.rejected, "pilot_wall_s": round(wall, 2),
        "pilot_cpu_s": round(cpu, 2), "core_seconds_per_sample": round(core_seconds, 4),
        "bytes_per_sample": round(stored / max(summary.done, 1)),
        "characters": character_count, "samples": total, "shards": math.ceil(total / config.samples_per_shard),
        "core_hours": round(core_hours, 1),
        "wall_hours": round(core_hours / (nodes * cores_per_node), 2), "nodes": nodes, "cores_per_node": cores_per_node,
        "storage_tb": round(stored / max(summary.done, 1) * total / 1e12, 3),
        "assumes": f"linear scaling over cores; rendering as in the pilot ({_renderer(config)} on this machine's CPUs)",
        "machine_cpus": os.cpu_count(),
    }
