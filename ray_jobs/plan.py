"""``pairforge plan --config C --pilot N``: run N samples of the job for real, then project
core-hours (GPU-hours for pairs on a GPU), wall time on K nodes (or GPUs) and storage for the whole
config. A render config renders N samples; a pairs config (configs/pairs-300k.yaml) standardizes,
captions and gates N photos."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path

from ray_jobs.config import ConfigError, config_hash
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


def is_pairs_config(path: str | None) -> bool:
    """Whether the YAML at ``path`` (a path, a URL or a bundled name) is a ``pairforge pairs`` config
    (it has a ``standardize`` or ``gate`` section) rather than a render config."""
    import yaml

    from ray_jobs.config import CONFIG_DIR
    from shards import storage

    if path is None:
        return False
    path = str(path)
    if not storage.is_remote(path) and not Path(path).exists() and (CONFIG_DIR / f"{path}.yaml").exists():
        path = str(CONFIG_DIR / f"{path}.yaml")
    try:
        data = yaml.safe_load(storage.read_text(path)) or {}
    except (OSError, yaml.YAMLError):
        return False  # load_config reports it
    return isinstance(data, dict) and bool({"standardize", "gate"} & set(data))


def _pilot_shard(photos_dir: str, out: Path, pilot: int) -> Path:
    """A photo shard of ``pilot`` records cycling through the curated photos of ``photos_dir``
    (the bytes as curated, keys made distinct), so any pilot size runs on a few photos."""
    from itertools import cycle, islice

    from ray_jobs.pairs import photo_work
    from shards.reader import iter_shard
    from shards.schema import PHOTO
    from shards.writer import ShardWriter

    records = [r for shard in photo_work(photos_dir) for r in iter_shard(shard[0]["source_shard"], decode=False)]
    if not records:
        raise ConfigError(f"--photos {photos_dir}: no kept photos to run the pilot on")
    with ShardWriter(out, "shard-000000", PHOTO, "pilot") as writer:
        for i, record in enumerate(islice(cycle(records), pilot)):
            writer.write({**record, "__key__": f"pilot{i:06d}"})
    return out


def plan_pairs(config, pilot: int, gpus: int, nodes: int, cores_per_node: int, photos: str | None = None) -> dict:
    """Run the pairs stage on ``pilot`` photos for real and project the whole job
    (``config.expected_photos``): per-pair cost (GPU-seconds on a GPU, core-seconds on CPUs),
    hours on ``gpus`` GPUs, and storage. What this machine lacks is stood in for, and said:
    a tiny untrained standardizer for a checkpoint not here, a tiny Qwen2-VL for a caption model
    not here, the CPU for a GPU, the demo's shipped photos when no ``photos`` are given."""
    import torch

    from curate.caption.models import CaptionModelError, model_identity
    from ray_jobs.pairs import pairs_stage, tiny_standardizer
    from ray_jobs.shardwork import InputShards
    from train.models.standardizer import CheckpointError, read_identity

    if config.expected_photos < 1:
        raise ConfigError("expected_photos is 0: set it to the number of photos the job is for "
                          "(--set expected_photos=300000)")
    stand_ins = []
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="pairforge-plan-") as tmp:
        tmp = Path(tmp)
        standardize, gate, caption = config.standardize, config.gate, config.caption
        try:
            read_identity(standardize.checkpoint)
        except CheckpointError:
            checkpoint = tiny_standardizer(tmp / "tiny")
            standardize = dataclasses.replace(standardize, checkpoint=str(checkpoint))
            gate = dataclasses.replace(gate, enforce=False)
            given = f"checkpoint {config.standardize.checkpoint} is not here" if config.standardize.checkpoint \
                else "no checkpoint given"
            stand_ins.append(f"{given}: a tiny UNTRAINED standardizer "
                             f"(64x96, the demo's tiny base) stands in, so the standardizer's share of the cost is "
                             f"far below the real SD-1.5-size one's; its noise fails the gate, so the pilot scores "
                             f"every check but rejects nothing (gate.enforce=false)")
        if caption.model:
            try:
                model_identity(caption)
            except CaptionModelError:
                from curate.caption.tiny import build_tiny_qwen2vl
                tiny = build_tiny_qwen2vl(tmp / "tiny-qwen2vl")
                caption = dataclasses.replace(caption, model=str(tiny), dtype="float32")
                stand_ins.append(f"caption model {config.caption.model} is not here: a tiny Qwen2-VL stands in "
                                 f"(same code path, a fraction of the 2B model's cost)")
        if not cuda:
            standardize = dataclasses.replace(standardize, device="cpu", gpus=0.0, dtype="float32")
            stand_ins.append(f"no GPU here: the pilot ran on this machine's {os.cpu_count()} CPUs, so the "
                             f"projection is in core-hours; run the plan on a GPU node for GPU-hours")
        if photos is None:
            from curate.stages import PhotoJobConfig
            from ray_jobs.curation import run_curate_photos
            from ray_jobs.demo import _shipped_photos
            from ray_jobs.jobs import RunOptions

            photos = str(tmp / "curated")
            run_curate_photos(PhotoJobConfig(), str(_shipped_photos(tmp / "photos-in")), photos,
                              RunOptions(runner="local", progress=False))
            stand_ins.append("photos: the demo's shipped photos (scikit-image's), curated here, repeated to the pilot size")
        small = dataclasses.replace(config, standardize=standardize, gate=gate, caption=caption)
        stage, shards, _ = pairs_stage(small, str(_pilot_shard(photos, tmp / "pilot", pilot)))
        inputs = InputShards()
        items = [inputs.resolve(item, stage.decodes) for shard in shards for item in shard]
        batches = [items[i:i + stage.batch_size] for i in range(0, len(items), stage.batch_size)]
        started = time.perf_counter()
        stage.setup()
        setup_s = time.perf_counter() - started
        stage.process_batch(batches[0][:1])  # first call: lazy initialisation, not counted
        stage.seconds.clear()
        started_wall, started_cpu = time.perf_counter(), _cpu_seconds()
        out = [record for batch in batches for record in stage.process_batch(batch)]
        wall, cpu = time.perf_counter() - started_wall, _cpu_seconds() - started_cpu
        stage.teardown()
    kept = [r for r in out if r.get("status") != "rejected"]
    # Bytes as stored: the members plus a 512-byte tar header each (and the record's own).
    stored = sum(sum(len(v) + 512 for k, v in r.items() if not k.startswith("__")) + 512 for r in kept)
    n, total = len(out), config.expected_photos
    per_pair_wall, per_pair_cpu = wall / n, cpu / n
    bytes_per_pair = stored / max(len(kept), 1)
    figures = {"kind": "pairs", "pilot_pairs": n, "pilot_rejected": n - len(kept),
               "pilot_gate_failed": sum(1 for r in kept if json.loads(r["json"]).get("gate_failed")),
               "pilot_setup_s": round(setup_s, 2), "pilot_wall_s": round(wall, 2), "pilot_cpu_s": round(cpu, 2),
               "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({os.cpu_count()} cores)",
               "seconds_per_pair": round(per_pair_wall, 4), "core_seconds_per_pair": round(per_pair_cpu, 4),
               "bytes_per_pair": round(bytes_per_pair), "pairs": total,
               "seconds_per_pair_by_phase": {phase: round(t / n, 4) for phase, t in stage.seconds.items()},
               "storage_tb": round(bytes_per_pair * total / 1e12, 4), "stand_ins": stand_ins,
               "assumes": "linear scaling over workers (one per GPU, or per core on CPUs); per-pair cost as in the "
                          "pilot at its batch size, model loading excluded; every photo kept (storage)"}
    if cuda:
        gpu_hours = per_pair_wall * total / 3600
        figures.update(gpu_seconds_per_pair=round(per_pair_wall, 4), gpu_hours=round(gpu_hours, 1), gpus=gpus,
                       wall_hours=round(gpu_hours / gpus, 2))
    else:
        core_hours = per_pair_cpu * total / 3600
        figures.update(core_hours=round(core_hours, 1), nodes=nodes, cores_per_node=cores_per_node,
                       wall_hours=round(core_hours / (nodes * cores_per_node), 2))
    return figures
