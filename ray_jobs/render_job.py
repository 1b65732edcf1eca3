"""The render job and the demo: characters -> RenderStage -> synthetic_pair shards -> contact sheet."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ray_jobs.config import ConfigError, config_changes, config_dict, config_hash, read_resolved, write_resolved
from ray_jobs.shardwork import RunSummary, plan_shards
from render.config import RenderConfig
from shards.schema import SYNTHETIC_PAIR
from shards.writer import package_versions

CHARACTER_SUFFIXES = (".glb",)
RUNNERS = ("ray", "local")


def character_files(config: RenderConfig, out_dir: Path) -> list[str]:
    """The job's characters: generated into OUT/characters, or the .glb files of a folder."""
    if config.characters.source == "procedural":
        from render.procedural import generate_characters
        return [str(p) for p in generate_characters(out_dir / "characters", config.characters.count,
                                                    config.characters.seed)]
    folder = Path(config.characters.source)
    if not folder.is_dir():
        raise FileNotFoundError(f"characters.source: {folder} is not a folder; give a folder of .glb files "
                                f"or 'procedural'")
    files = sorted(str(p.resolve()) for p in folder.iterdir() if p.suffix.lower() in CHARACTER_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"characters.source: no .glb files in {folder}")
    return files


def prepare_output(config, out_dir: Path, overwrite: bool) -> None:
    """Refuse (before any work) to continue an output written with another config, naming what
    changed; with ``overwrite``, clear the old shards instead."""
    previous = read_resolved(out_dir)
    changes = config_changes(previous, config_dict(config)) if previous is not None else []
    if changes and not overwrite:
        listed = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        raise ConfigError(f"{out_dir} was written with another config ({listed}). Re-run with the same "
                          f"settings to resume, choose a new --out, or pass --overwrite to replace it")
    if changes:
        shutil.rmtree(out_dir / "pairs", ignore_errors=True)
    write_resolved(config, out_dir)


def run_render(config: RenderConfig, out_dir: str | Path, runner: str = "ray", address: str | None = None,
               workers: int | None = None, overwrite: bool = False, progress: bool = True,
               sample_timeout: float | None = 120.0) -> RunSummary:
    from render.stage import RenderStage, plan_items

    if runner not in RUNNERS:
        raise ConfigError(f"unknown runner {runner!r}; use one of {', '.join(RUNNERS)}")
    out_dir = Path(out_dir).resolve()
    prepare_output(config, out_dir, overwrite)
    shards = plan_shards(plan_items(config, character_files(config, out_dir)), config.samples_per_shard)
    pairs = out_dir / "pairs"
    pairs.mkdir(parents=True, exist_ok=True)
    (pairs / "plan.json").write_text(json.dumps(
        {"config_hash": config_hash(config), "shards": len(shards), "samples": [len(s) for s in shards]}))
    versions = package_versions("pyrender" if config.backend == "pyrender" else "bpy")
    args = (RenderStage(config), shards, pairs, SYNTHETIC_PAIR, config_hash(config), versions, config.batch_size,
            progress, sample_timeout)
    if runner == "local":
        from ray_jobs.local import run_local
        return run_local(*args)
    from ray_jobs.ray_runner import run_ray
    return run_ray(*args, address=address, workers=workers)


def write_contact_sheet(pairs_dir: Path, path: Path, per_character: int = 2, max_rows: int = 16) -> Path:
    """A contact sheet of the first ``per_character`` pairs of each character."""
    from render.contact_sheet import contact_sheet
    from shards.reader import iter_dataset

    picked, seen = [], {}
    for record in iter_dataset(pairs_dir):
        character = record["json"]["character_id"]
        if seen.get(character, 0) < per_character:
            seen[character] = seen.get(character, 0) + 1
            picked.append(record)
        if len(picked) >= max_rows:
            break
    contact_sheet(picked).save(path)
    return path
