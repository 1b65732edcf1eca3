"""``pairforge pairs``: curated photos -> real pairs (pairs.build) on either runner, one output
shard per input shard, resumable by shard. Everything that can be wrong is checked here, before
any work: the checkpoint (a standardizer with its standard pose), the photo folder (curated
``photo`` shards), the caption model and the gate's settings. Also the demo's pairs step and the
tiny standardizer that tests and ``pairforge plan`` use where no trained one exists."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ray_jobs.config import ConfigError, load_config
from ray_jobs.jobs import RunOptions, prepare_output, records_by_shard, run_job
from ray_jobs.shardwork import RunSummary
from shards import storage

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
CURATE_FIRST = "run `pairforge curate photos --in {src} --out CURATED` first and give --photos CURATED"


def photo_work(photos_dir: str) -> list[list[dict]]:
    """One list of work items per curated ``photo`` shard in ``photos_dir`` (a `curate photos`
    job's --out or its photos/ folder); ConfigError naming what to run when
    the folder holds raw images, other records or nothing."""
    if storage.is_dir(storage.join(photos_dir, "photos")):  # a curate job's --out: its photos/ folder
        photos_dir = storage.join(photos_dir, "photos")
    if not storage.is_dir(photos_dir):
        raise ConfigError(f"--photos {photos_dir}: no such folder; give the --out of `pairforge curate photos`")
    kinds, shards = records_by_shard(photos_dir)
    if not shards:
        images = [f for f in storage.glob(photos_dir, "*") if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        what = f"holds {len(images)} image files but no curated photo shards" if images else "holds no shards"
        raise ConfigError(f"--photos {photos_dir} {what}: {CURATE_FIRST.format(src=photos_dir)}")
    if kinds != {"photo"}:
        raise ConfigError(f"--photos {photos_dir} holds {', '.join(sorted(kinds))} records, not curated photo records: "
                          f"{CURATE_FIRST.format(src='PHOTOS')}")
    return shards


def pairs_stage(config, photos_dir: str):
    """(the stage, its work list, the resolved config); ConfigError before any work."""
    from curate.caption.models import CaptionModelError, model_identity
    from pairs.build import PairsStage, with_checkpoint
    from train.models.standardizer import CheckpointError, read_identity

    try:
        identity = read_identity(config.standardize.checkpoint)
    except CheckpointError as error:
        raise ConfigError(str(error)) from None
    if not identity.get("standard_pose"):
        raise ConfigError(f"--checkpoint {config.standardize.checkpoint} has no standard pose; use a checkpoint "
                          f"written by `pairforge train stage1`")
    shards = photo_work(photos_dir)
    gate = config.gate
    if gate.needs_detector and gate.detector == "mediapipe" and importlib.util.find_spec("mediapipe") is None:
        raise ConfigError("the gate's face and pose checks use mediapipe, which is not installed: pip install "
                          "'pairforge[curate]', or --set gate.detector=opencv with pose out of gate.checks")
    embedder = gate.embedder
    if "identity" in gate.checks and embedder and embedder.startswith(("/", ".", "~")) \
            and not Path(embedder).expanduser().is_dir():
        raise ConfigError(f"gate.embedder {embedder}: no such folder; give a CLIP vision model folder or hub id, "
                          f"or leave it empty for the standardizer's own image encoder")
    try:
        caption_identity = model_identity(config.caption) if config.caption.model else None
    except CaptionModelError as error:
        raise ConfigError(f"caption.model: {error}") from None
    config = with_checkpoint(config, str(Path(config.standardize.checkpoint).resolve()), identity["weights_sha256"])
    return PairsStage(config, identity, caption_identity), shards, config


def run_pairs(config, photos_dir: str | Path, out_dir: str | Path, options: RunOptions = RunOptions()) -> RunSummary:
    """The standardizer of ``config.standardize.checkpoint`` over the curated photos in
    ``photos_dir`` -> ``real_pair`` shards in ``out_dir`` (one per photo shard; a re-run redoes
    only the shards not complete)."""
    photos_dir, out_dir = storage.absolute(photos_dir), storage.absolute(out_dir)
    if config.standardize.gpus > 0 and options.address is None and options.runner == "ray":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("pairs asks standardize.gpus=1 per worker but this machine has no GPU: --set "
                              "standardize.gpus=0 --set standardize.device=cpu to run on CPUs, or --address a "
                              "cluster with GPUs")
    stage, shards, config = pairs_stage(config, photos_dir)
    prepare_output(config, out_dir, out_dir, options.overwrite)
    return run_job(stage, shards, out_dir, config, options)


def tiny_standardizer(folder: Path, resolution: tuple[int, int] = (64, 96), characters: int = 1) -> Path:
    """An untrained tiny standardizer at ``folder``/checkpoint whose standard pose is that of a
    standardized render (the first of ``characters`` generated humans, one pose each, rendered at
    256x384 into ``folder``/render in ~3 s): tests' and plan's model."""
    import numpy as np

    from ray_jobs.jobs import run_render
    from render.config import RenderConfig
    from shards.reader import iter_dataset
    from train.data.kinds import fit_keypoints
    from train.models.tiny import build_tiny_standardizer

    checkpoint = folder / "checkpoint"
    if (checkpoint / "standardizer.json").exists():
        return checkpoint
    render = load_config(RenderConfig, "demo", ["characters.source=human", f"characters.count={characters}",
                                                "poses_per_character=1", "resolution=[256, 384]"])
    run_render(render, folder / "render", RunOptions(runner="local", progress=False))
    std = next(iter_dataset(folder / "render" / "pairs"))
    pose = fit_keypoints(std["json"]["std"]["keypoints"], std["std.png"].shape[1::-1], resolution)
    return build_tiny_standardizer(checkpoint, np.round(pose, 2).tolist(), resolution)


def demo_pairs(out: Path, checkpoint: str, photos_dir: Path, overwrite: bool = False) -> tuple[list[str], int]:
    """``pairs`` over the demo's curated photos with its tiny standardizer and a tiny Qwen2-VL
    (random weights: the path, not a useful model), in-process, into OUT/real-pairs. The gate runs
    with the settings of configs/pairs-tiny.yaml: the tiny model draws noise, so the face and pose
    checks are off and the foreground and identity thresholds are relaxed; the line says so.
    Returns the summary lines and the number of pairs written."""
    from curate.caption.tiny import build_tiny_qwen2vl
    from pairs.build import PairsConfig

    qwen, pairs_out = out / "real-pairs-captioner", out / "real-pairs"
    if not (qwen / "config.json").exists():
        build_tiny_qwen2vl(qwen)
    # test_fraction=0: a handful of photos could all fall in the test split, leaving Stage II nothing to train on
    config = load_config(PairsConfig, "pairs-tiny", [f"standardize.checkpoint={checkpoint}",
                                                     f"caption.model={qwen}", "test_fraction=0"])
    summary = run_pairs(config, photos_dir, pairs_out, RunOptions(runner="local", overwrite=overwrite, progress=False))
    reasons = ", ".join(f"{n} {reason}" for reason, n in summary.reasons.most_common()) or "none"
    gate = config.gate
    return [f"real pairs (tiny standardizer, tiny Qwen2-VL captions): {summary.done} pairs, {summary.rejected} "
            f"rejected ({reasons}) -> {pairs_out}; gate relaxed for the tiny model's noise: checks "
            f"{', '.join(gate.checks)} (face and pose off), min_foreground={gate.min_foreground}, "
            f"min_similarity={gate.min_similarity}"], summary.done
