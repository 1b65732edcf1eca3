"""The render job and the demo: characters -> RenderStage -> synthetic_pair shards -> contact sheet."""
from __future__ import annotations

from pathlib import Path

from ray_jobs.config import config_hash, write_resolved
from ray_jobs.local import RunSummary, plan_shards, run_local
from render.config import RenderConfig
from shards.schema import SYNTHETIC_PAIR
from shards.writer import package_versions

CHARACTER_SUFFIXES = (".glb",)


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
    files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in CHARACTER_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"characters.source: no .glb files in {folder}")
    return files


def run_render(config: RenderConfig, out_dir: str | Path, progress: bool = True) -> RunSummary:
    from render.stage import RenderStage, plan_items

    out_dir = Path(out_dir)
    files = character_files(config, out_dir)
    write_resolved(config, out_dir)
    shards = plan_shards(plan_items(config, files), config.samples_per_shard)
    versions = package_versions("pyrender" if config.backend == "pyrender" else "bpy")
    return run_local(RenderStage(config), shards, out_dir / "pairs", SYNTHETIC_PAIR, config_hash(config), versions,
                     config.batch_size, progress)


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
