"""``pairforge caption``: shards of any captioned kind -> the same records with captions (or
sidecar caption shards), on either runner. The model is checked here, before any work."""
from __future__ import annotations

from pathlib import Path

from ray_jobs.config import ConfigError
from ray_jobs.jobs import RunOptions, prepare_output, run_job
from ray_jobs.shardwork import RunSummary
from shards import storage


def characters_folder(config, in_dir: str) -> str | None:
    """Where the metadata captioner finds the procedural characters' .glb files: the config's
    folder, or the input job's characters/ (a demo's OUT/characters beside OUT/composited)."""
    if config.characters:
        return config.characters
    for folder in (storage.join(in_dir, "characters"), storage.join(storage.parent(in_dir), "characters")):
        if storage.is_dir(folder):
            return folder
    return None


def caption_stage(config, in_dir: str | Path, out_dir: str | Path):
    """(the stage, its work list) for captioning ``in_dir`` into ``out_dir``; raises ConfigError
    (before any work) on input it cannot caption or a model it cannot use."""
    from curate.caption.models import CaptionModelError, model_identity
    from curate.caption.stage import CaptionStage, plan_caption_items

    in_dir, out_dir = storage.absolute(in_dir), storage.absolute(out_dir)
    try:
        kind, shards = plan_caption_items(in_dir)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not shards:
        raise FileNotFoundError(f"--in {in_dir}: no shards found")
    try:
        identity = model_identity(config) if config.resolved_backend != "metadata" else None
    except CaptionModelError as error:
        raise ConfigError(str(error)) from None
    cache = None if config.cache == "none" or identity is None else config.cache or storage.join(out_dir, "caption_cache")
    return CaptionStage(config, kind, identity, cache, characters_folder(config, in_dir)), shards


def run_caption(config, in_dir: str | Path, out_dir: str | Path, options: RunOptions = RunOptions()) -> RunSummary:
    """Caption the shards in ``in_dir`` into ``out_dir`` (one output shard per input shard)."""
    stage, shards = caption_stage(config, in_dir, out_dir)
    out_dir = Path(out_dir).resolve()
    prepare_output(config, out_dir, out_dir, options.overwrite)
    return run_job(stage, shards, out_dir, config, options)
