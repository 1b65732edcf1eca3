"""``pairforge curate assets|photos|backgrounds``: the curation jobs, each built on ``run_job``
(either runner, resumable by shard), each ending with an HTML report of counts and example
thumbnails per reason.

photos: OUT/checked (per-shard checks) -> one global duplicate pass over the pHashes of all kept
photos (in this process, reading json members only) -> OUT/photos (the final ``photo`` shards,
one per checked shard, duplicates rejected naming the photo kept) -> OUT/report.html."""
from __future__ import annotations

from pathlib import Path

from ray_jobs.config import ConfigError
from ray_jobs.jobs import RunOptions, prepare_output, run_job
from ray_jobs.shardwork import RunSummary, plan_shards
from shards import storage


def _merge(first: RunSummary, second: RunSummary) -> RunSummary:
    """The photo job's summary: the final shards' counts, the rejects of both passes."""
    second.rejected += first.rejected
    second.reasons.update(first.reasons)
    for reason, example in first.examples.items():
        second.examples.setdefault(reason, example)
    second.seconds += first.seconds
    second.startup_seconds += first.startup_seconds
    second.failed += first.failed
    return second


def _check(config) -> None:
    """A config built in code gets the same check as one loaded from YAML: before any work."""
    try:
        config.check()
    except ValueError as error:
        raise ConfigError(f"config: {error}") from None


def _checked_then_deduplicated(stage, items: list[dict], out_dir: str, final: str, config, options: RunOptions,
                               verdicts_of) -> RunSummary:
    """``stage`` over ``items`` into OUT/checked; ``verdicts_of(OUT/checked)`` (the global
    duplicate pass, here in the driver); then the checked shards copied to OUT/``final`` with the
    duplicates rejected."""
    from curate.stages import DuplicateFilterStage, filter_items

    checked, kept = storage.join(out_dir, "checked"), storage.join(out_dir, final)
    prepare_output(config, out_dir, checked, options.overwrite)
    first = run_job(stage, plan_shards(items, config.samples_per_shard), checked, config, options)
    shards = filter_items(checked, verdicts_of(checked))
    if options.overwrite:
        storage.remove_tree(kept)
    if not shards:  # every input was rejected by a check
        storage.makedirs(kept)
        first.out_dir = kept
        return first
    summary = _merge(first, run_job(DuplicateFilterStage().with_(schema=stage.schema), shards, kept, config, options))
    summary.out_dir = kept
    return summary


def run_curate_photos(config, source: str, out_dir: str | Path, options: RunOptions = RunOptions()) -> RunSummary:
    """Photos of SOURCE -> ``photo`` shards in OUT/photos, with OUT/report.html."""
    from curate.report import write_report
    from curate.stages import PhotoStage, SourceError, duplicate_verdicts, photo_items

    _check(config)
    out_dir = storage.absolute(out_dir)
    storage.check_access(out_dir, write=True)
    try:
        items = photo_items(source)
    except SourceError as error:
        raise ConfigError(str(error)) from None
    summary = _checked_then_deduplicated(PhotoStage(config), items, out_dir, "photos", config, options,
                                         lambda checked: duplicate_verdicts(checked, config.checks.near_duplicate_bits))
    write_report(out_dir, [storage.join(out_dir, "checked"), summary.out_dir], "curate photos", config.report_examples)
    return summary


def run_curate_assets(config, in_dir: str | Path, out_dir: str | Path, options: RunOptions = RunOptions()) -> RunSummary:
    """Character assets in ``in_dir`` -> OUT/assets (the manifest shards), OUT/kept/ (copies of
    the kept files: ``characters.source`` of ``pairforge render``), OUT/kept.txt, OUT/report.html."""
    from curate.assets import AssetStage, asset_files, asset_items, duplicate_verdicts, write_kept
    from curate.report import write_report

    _check(config)
    in_dir, out_dir = storage.absolute(in_dir), storage.absolute(out_dir)
    items = asset_items(asset_files(in_dir))
    summary = _checked_then_deduplicated(AssetStage(config), items, out_dir, "assets", config, options,
                                         lambda checked: duplicate_verdicts(checked, config.checks))
    write_kept(summary.out_dir, out_dir)
    write_report(out_dir, [storage.join(out_dir, "checked"), summary.out_dir], "curate assets", config.report_examples)
    return summary


def run_curate_backgrounds(config, in_dir: str | Path, out_dir: str | Path,
                           options: RunOptions = RunOptions()) -> RunSummary:
    """Background images in ``in_dir`` -> OUT/backgrounds (manifest shards), OUT/kept/, OUT/kept.txt, OUT/report.html."""
    from curate.backgrounds import BackgroundStage, background_items, write_kept
    from curate.report import write_report
    from curate.stages import duplicate_verdicts

    _check(config)
    in_dir, out_dir = storage.absolute(in_dir), storage.absolute(out_dir)
    items = background_items(in_dir)
    summary = _checked_then_deduplicated(BackgroundStage(config), items, out_dir, "backgrounds", config, options,
                                         lambda checked: duplicate_verdicts(checked, config.near_duplicate_bits))
    write_kept(summary.out_dir, out_dir)
    write_report(out_dir, [storage.join(out_dir, "checked"), summary.out_dir], "curate backgrounds",
                 config.report_examples)
    return summary
