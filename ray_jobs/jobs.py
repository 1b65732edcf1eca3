"""The jobs: one generic job function (``run_job``) that runs any stage on either runner, and
the jobs built on it (render, multiview, composite, router scenes) with their contact sheets."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ray_jobs.config import (
    ConfigError,
    config_changes,
    config_dict,
    config_hash,
    read_resolved,
    write_resolved,
)
from ray_jobs.shardwork import RunSummary, ShardJob, plan_shards
from render.backends.settings import CHARACTER_SUFFIXES as BLENDER_CHARACTER_SUFFIXES
from render.config import RenderConfig
from render.gltf import BINARY_GLTF_SUFFIXES
from shards import storage
from shards.keys import shard_name
from shards.stage import Stage
from shards.writer import package_versions, shard_is_complete

CHARACTER_SUFFIXES = {"pyrender": BINARY_GLTF_SUFFIXES, "fake": BINARY_GLTF_SUFFIXES, "blender": BLENDER_CHARACTER_SUFFIXES}
RUNNERS = ("ray", "local")


GENERATED = ("procedural", "human")  # characters.source values that generate characters instead of reading a folder


def generator(kind: str):
    """The writer of generated characters of ``kind``: (out_dir, count, seed) -> paths."""
    if kind == "human":
        from render.human import generate_humans
        return generate_humans
    from render.procedural import generate_characters
    return generate_characters


def character_files(config: RenderConfig, out_dir: str | Path) -> list[str]:
    """The job's characters: generated into OUT/characters (on object storage: generated here and
    uploaded, so workers on any node read them), or the asset files of a folder (a path or a URL)
    that the chosen backend reads."""
    if config.characters.source in GENERATED:
        generate = generator(config.characters.source)
        if not storage.is_remote(out_dir):
            return [str(p) for p in generate(Path(out_dir) / "characters", config.characters.count,
                                             config.characters.seed)]
        with tempfile.TemporaryDirectory(prefix="pairforge-characters-") as scratch:
            generate(scratch, config.characters.count, config.characters.seed)
            for local in sorted(Path(scratch).iterdir()):
                storage.put_file(local, storage.join(out_dir, "characters", local.name))
        return storage.glob(storage.join(out_dir, "characters"), "*.glb")
    folder = storage.absolute(config.characters.source)
    suffixes = CHARACTER_SUFFIXES[config.backend]
    if not storage.is_dir(folder):
        raise FileNotFoundError(f"characters.source: {folder} is not a folder; give a folder of "
                                f"{'/'.join(suffixes)} files, 'procedural' or 'human'")
    names = storage.glob(folder, "*")
    files = [f for f in names if Path(f).suffix.lower() in suffixes]
    if not files:
        others = sorted({Path(f).suffix.lower() for f in names} & set(CHARACTER_SUFFIXES["blender"]))
        hint = f" ({', '.join(others)} files need --backend blender)" if others else ""
        raise FileNotFoundError(f"characters.source: no {'/'.join(suffixes)} files in {folder}{hint}")
    return files


def prepare_output(config, config_dir: Path, shard_dir: Path, overwrite: bool) -> None:
    """Refuse (before any work) to continue an output written with another config, naming what
    changed; with ``overwrite``, clear the old shards instead."""
    previous = read_resolved(config_dir)
    changes = config_changes(previous, config_dict(config)) if previous is not None else []
    if changes and not overwrite:
        listed = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        raise ConfigError(f"{config_dir} was written with another config ({listed}). Re-run with the same "
                          f"settings to resume, choose a new --out, or pass --overwrite to replace it")
    if changes:
        storage.remove_tree(shard_dir)
    write_resolved(config, config_dir)


def write_plan(shard_dir: str | Path, config, shards: list[list[dict]]) -> None:
    """The job's shard layout, for ``pairforge status``."""
    storage.write_bytes(storage.join(shard_dir, "plan.json"), json.dumps(
        {"config_hash": config_hash(config), "shards": len(shards), "samples": [len(s) for s in shards]}).encode())


@dataclass(frozen=True)
class RunOptions:
    """How a job runs, whatever its stage: the command line's run options."""
    runner: str = "ray"
    address: str | None = None
    workers: int | None = None
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.runner not in RUNNERS:
            raise ConfigError(f"unknown runner {self.runner!r}; use one of {', '.join(RUNNERS)}")
        if self.runner == "ray" and importlib.util.find_spec("ray") is None:
            raise ConfigError("--runner ray (the default) needs Ray: pip install 'pairforge[ray]', "
                              "or run in-process with --runner local")
        if self.workers is not None and self.workers < 1:
            raise ConfigError("--workers must be >= 1")


def finished_before(shard_dir: Path, config) -> bool:
    """Whether every shard of the job's last plan in ``shard_dir`` is complete under ``config``."""
    try:
        plan = json.loads(storage.read_bytes(storage.join(shard_dir, "plan.json")))
    except (OSError, ValueError):
        return False
    digest = config_hash(config)
    return plan.get("config_hash") == digest and all(
        shard_is_complete(shard_dir, shard_name(i), digest) for i in range(plan.get("shards", 0)))


def plan_while_starting(options: RunOptions, shard_dir: Path, config, plan):
    """``plan()`` on a thread while the runner starts on this one: an embedded Ray takes 3-5 s
    to start here, and planning the demo (generating its characters) ~1.5 s. A job that is
    already complete starts no Ray."""
    if options.runner != "ray" or finished_before(shard_dir, config):
        return plan()
    from concurrent.futures import ThreadPoolExecutor

    from ray_jobs.ray_runner import connect
    with ThreadPoolExecutor(1, thread_name_prefix="plan") as pool:
        planned = pool.submit(plan)
        connect(options.address)
        return planned.result()


def run_job(stage: Stage, shards: list[list[dict]], shard_dir: Path, config, options: RunOptions) -> RunSummary:
    """The one job function: ``stage`` over the work list ``shards`` into ``shard_dir`` on the
    chosen runner, with what the stage declares (schema, batch size, deadline, resources)."""
    write_plan(shard_dir, config, shards)
    job = ShardJob(storage.absolute(shard_dir), config_hash(config), package_versions(*stage.packages),
                   dataclasses.asdict(storage.settings()))
    if options.runner == "local":
        from ray_jobs.local import run_local
        return run_local(stage, shards, job, options.progress)
    from ray_jobs.ray_runner import run_ray
    return run_ray(stage, shards, job, options.progress, options.address, options.workers)


def run_render(config: RenderConfig, out_dir: str | Path, options: RunOptions = RunOptions()) -> RunSummary:
    """Characters of ``config`` -> ``synthetic_pair`` shards in ``out_dir``/pairs."""
    from render.stage import RenderStage, plan_items

    out_dir = storage.absolute(out_dir)
    storage.check_access(out_dir, write=True)
    if config.characters.source not in GENERATED:
        storage.check_access(config.characters.source)
    pairs = storage.join(out_dir, "pairs")
    prepare_output(config, out_dir, pairs, options.overwrite)
    shards = plan_while_starting(options, pairs, config, lambda: plan_shards(
        plan_items(config, character_files(config, out_dir)), config.samples_per_shard))
    logs = storage.join(out_dir, "logs") if not storage.is_remote(out_dir) else tempfile.mkdtemp(prefix="pairforge-logs-")
    return run_job(RenderStage(config, log_dir=logs), shards, pairs, config, options)


def run_multiview(config, out_dir: str | Path, options: RunOptions = RunOptions()) -> RunSummary:
    """Mesh assets of ``config.objects`` -> ``multiview`` shards in ``out_dir`` (Blender)."""
    from render.multiview import MultiviewStage, object_files, plan_objects

    out_dir = Path(out_dir).resolve()
    files = object_files(config)  # fails now, before any work, on a missing or empty folder
    prepare_output(config, out_dir, out_dir, options.overwrite)
    shards = plan_shards(plan_objects(config, files), config.samples_per_shard)
    return run_job(MultiviewStage(config, log_dir=str(out_dir / "logs")), shards, out_dir, config, options)


def pairs_folder(in_dir: str | Path) -> str:
    """A render job's --out, or its pairs/ folder itself (a path or a URL) -> the folder of
    synthetic_pair shards."""
    in_dir = storage.absolute(in_dir)
    pairs = storage.join(in_dir, "pairs")
    return pairs if storage.is_dir(pairs) else in_dir


def records_by_shard(in_dir: str) -> tuple[set[str], list[list[dict]]]:
    """(the record kinds the manifests name, one list of work items per shard in ``in_dir``, each
    naming its input record and shard): the plan of a job that writes one shard per input shard."""
    from shards.reader import shard_paths

    kinds, shards = set(), []
    for path in shard_paths(in_dir):
        manifest = json.loads(storage.read_bytes(path.removesuffix(".tar") + ".json"))
        kinds.add(manifest["schema"]["name"])
        shards.append([{"__key__": key, "inputs": [[path, key]], "source_shard": path} for key in manifest["keys"]])
    return kinds, shards


def check_storage(config, in_dir: str, out_dir: str) -> None:
    """Before any work: the input, the backgrounds and the output (written and removed a probe)
    are reachable; a missing bucket or denied access is a StorageError naming the URL."""
    storage.check_access(in_dir)
    if config.backgrounds != "procedural":
        storage.check_access(config.backgrounds)
    storage.check_access(out_dir, write=True)


def run_composite(config, in_dir: str | Path, out_dir: str | Path, options: RunOptions = RunOptions()) -> RunSummary:
    """``synthetic_pair`` shards under ``in_dir`` (a job's --out, or its pairs/ folder) ->
    ``composited_pair`` shards in ``out_dir``, one output shard per input shard."""
    from render.compositing.backgrounds import open_backgrounds
    from render.compositing.stage import CompositeStage, plan_composite_items

    in_dir, out_dir = storage.absolute(in_dir), storage.absolute(out_dir)
    check_storage(config, in_dir, out_dir)
    shards = plan_composite_items(pairs_folder(in_dir), config.seed)
    if not shards:
        raise FileNotFoundError(f"--in {in_dir}: no synthetic_pair shards found")
    prepare_output(config, out_dir, out_dir, options.overwrite)
    open_backgrounds(config)  # fails now, before any work, on a backgrounds folder that is missing or empty
    return run_job(CompositeStage(config), shards, out_dir, config, options)


def _first_per_character(records, per_character: int, max_rows: int) -> list[dict]:
    picked, seen = [], {}
    for record in records:
        character = record["json"]["character_id"]
        if seen.get(character, 0) < per_character:
            seen[character] = seen.get(character, 0) + 1
            picked.append(record)
        if len(picked) >= max_rows:
            break
    return picked


def write_contact_sheet(pairs_dir: Path, path: Path, per_character: int = 2, max_rows: int = 16) -> Path:
    """A contact sheet of the first ``per_character`` pairs of each character."""
    from render.contact_sheet import contact_sheet
    from shards.reader import iter_dataset

    contact_sheet(_first_per_character(iter_dataset(pairs_dir), per_character, max_rows)).save(path)
    return path


def write_composite_sheet(pairs_dir: Path, composited_dir: Path, path: Path, per_character: int = 2,
                          max_rows: int = 16) -> Path:
    """Source, composite, background mask and pose image of the first pairs of each character."""
    from render.contact_sheet import composite_sheet
    from shards.reader import iter_dataset

    picked = _first_per_character(iter_dataset(composited_dir), per_character, max_rows)
    wanted = {r["json"]["pair_key"] for r in picked}
    pairs = {r["__key__"]: r for r in iter_dataset(pairs_dir) if r["__key__"] in wanted}
    composite_sheet(pairs, picked).save(path)
    return path


def run_router_scenes(config, in_dir: str | Path, out_dir: str | Path, options: RunOptions = RunOptions()) -> RunSummary:
    """``synthetic_pair`` shards under ``in_dir`` -> multi-subject ``router_sample`` shards in ``out_dir``."""
    from render.compositing.backgrounds import open_backgrounds
    from render.compositing.scenes import RouterSceneStage, plan_scenes

    in_dir, out_dir = storage.absolute(in_dir), storage.absolute(out_dir)
    check_storage(config, in_dir, out_dir)
    prepare_output(config, out_dir, out_dir, options.overwrite)
    open_backgrounds(config)  # fails now, before any work, on a backgrounds folder that is missing or empty
    shards = plan_while_starting(options, out_dir, config, lambda: plan_scenes(pairs_folder(in_dir), config))
    return run_job(RouterSceneStage(config), shards, out_dir, config, options)


def write_router_sheet(router_dir: Path, path: Path, rows: int = 8) -> Path:
    from itertools import islice

    from render.contact_sheet import router_sheet
    from shards.reader import iter_dataset

    router_sheet(list(islice(iter_dataset(router_dir), rows))).save(path)
    return path
