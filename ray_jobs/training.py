"""``pairforge train stage1``, ``train stage2`` and ``train router`` (one process, or a Ray Train
``TorchTrainer``: one DDP rank per worker, each reading its own shards), ``pairforge eval stage2``,
the demo's Stage II (``demo_stage2``) and ``pairforge standardize`` (a Stage on either runner,
resumable by shard). Everything that can be wrong with the inputs is checked here, before any work:
the record kind of the data, the resolution against the base UNet, the checkpoint's identity."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ray_jobs.config import ConfigError, config_changes, config_dict, read_resolved, write_resolved
from ray_jobs.jobs import RunOptions, prepare_output, records_by_shard, run_job
from ray_jobs.shardwork import RunSummary
from shards import storage


def check_training(module: str, config, data) -> None:
    """Before any work, a ConfigError naming what to change: data of the wrong record kind for the
    trainer ``module`` (train.stage1, train.router or train.stage2), or a base model (or, stage2,
    a starting adapter) it cannot take."""
    import importlib

    from train.data import DatasetKindError

    trainer = importlib.import_module(module)
    try:
        trainer.dataset(data)
        trainer.check_base(config)
    except (DatasetKindError, FileNotFoundError, ValueError) as error:
        raise ConfigError(str(error)) from None
    except OSError as error:  # diffusers: no such model folder or hub id
        raise ConfigError(f"base {config.base!r}: {error}") from None


def _refuse_other_config(config, out: Path, overwrite: bool) -> None:
    """Resuming needs the same config (``steps`` may grow); --overwrite starts over."""
    import shutil

    previous = read_resolved(out)
    changes = [c for c in config_changes(previous, config_dict(config)) if not c.startswith("steps:")] \
        if previous is not None else []
    if changes and not overwrite:
        raise ConfigError(f"{out} holds a run with another config ({'; '.join(changes[:8])}); resume with the same "
                          f"settings, choose a new --out, or pass --overwrite to start over")
    if changes:
        for folder in ("checkpoints", "final", "samples", "logs", "ranks"):
            shutil.rmtree(out / folder, ignore_errors=True)
    write_resolved(config, out)


def run_train_stage1(config, data: str, out: str | Path, workers: int = 1, gpus_per_worker: float = 0.0,
                     cpus_per_worker: float = 1.0, address: str | None = None, overwrite: bool = False,
                     progress: bool = True) -> dict:
    """Train the standardizer on the pairs in ``data`` into ``out`` (checkpoints, final/, samples/,
    logs/). ``workers`` > 1 or an ``address``: Ray Train across the cluster, DDP over NCCL with GPUs
    and gloo without; else in this process. Resumes from the latest checkpoint in ``out``."""
    return _run_training("train.stage1", config, data, out, workers, gpus_per_worker, cpus_per_worker,
                         address, overwrite, progress)


def run_train_router(config, data: str, out: str | Path, workers: int = 1, gpus_per_worker: float = 0.0,
                     cpus_per_worker: float = 1.0, address: str | None = None, overwrite: bool = False,
                     progress: bool = True) -> dict:
    """Train AnyStory's router on the router samples in ``data`` into ``out`` (checkpoints, final/,
    figures/, logs/); the same launch as stage1's."""
    return _run_training("train.router", config, data, out, workers, gpus_per_worker, cpus_per_worker,
                         address, overwrite, progress)


def run_train_stage2(config, data: str, out: str | Path, workers: int = 1, gpus_per_worker: float = 0.0,
                     cpus_per_worker: float = 1.0, address: str | None = None, overwrite: bool = False,
                     progress: bool = True) -> dict:
    """Train the Stage II IP-Adapter on the real pairs in ``data`` into ``out`` (checkpoints, final/:
    the adapter folder load_ip_adapter reads, samples/, logs/); the same launch as stage1's."""
    return _run_training("train.stage2", config, data, out, workers, gpus_per_worker, cpus_per_worker,
                         address, overwrite, progress)


def _run_training(module: str, config, data: str, out, workers: int, gpus: float, cpus: float,
                  address: str | None, overwrite: bool, progress: bool) -> dict:
    """Checks before any work, then ``module``.train in this process or one rank per Ray Train worker."""
    import importlib

    out = Path(out).resolve()
    data = str(Path(data).resolve()) if not storage.is_remote(str(data)) and Path(data).exists() else str(data)
    check_training(module, config, data)
    out.mkdir(parents=True, exist_ok=True)
    _refuse_other_config(config, out, overwrite)
    if workers <= 1 and address is None:
        return importlib.import_module(module).train(config, data, out, progress=progress)
    return _ray_train(module, config, data, out, workers, gpus, cpus, address, progress)


def _ray_train(module: str, config, data: str, out: Path, workers: int, gpus: float, cpus: float,
               address: str | None, progress: bool) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ray_jobs.ray_runner import connect

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")  # ~26 s under load here (FACTS)
    connect(address)

    def loop(settings):
        import importlib

        import ray.train

        train_rank = importlib.import_module(settings["module"]).train
        context = ray.train.get_context()
        result = train_rank(settings["config"], settings["data"], settings["out"], rank=context.get_world_rank(),
                            world_size=context.get_world_size(), report=ray.train.report,
                            progress=settings["progress"])
        if context.get_world_rank() == 0:
            Path(settings["out"], "ranks", "result.json").write_text(json.dumps(result))

    trainer = TorchTrainer(
        loop, train_loop_config={"module": module, "config": config, "data": data, "out": str(out),
                                 "progress": progress},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                     resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}),
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
        run_config=RunConfig(name=module.rsplit(".", 1)[-1], storage_path=str(out / "ray_train")))
    trainer.fit()
    return {**json.loads((out / "ranks" / "result.json").read_text()), "workers": workers}


def run_eval_stage2(config, adapter: str | Path, prompts_file: str | Path, out: str | Path,
                    references: str | None = None) -> dict:
    """``pairforge eval stage2``: train.evaluate over the prompts in ``prompts_file`` (one a line)
    and the references (real_pair shards or an image folder; default: the split=test pairs the
    adapter was trained on), generated backgrounds removed by curate.people's segmenter (or the
    white threshold). A ConfigError, before any generation, names what to change."""
    from train.evaluate import evaluate, read_references
    from train.models.personalizer import AdapterError, read_identity

    try:
        identity = read_identity(adapter)
        prompts = [line.strip() for line in Path(prompts_file).read_text().splitlines() if line.strip()]
        refs = read_references(references or identity["data"], config.max_references)
    except (AdapterError, OSError) as error:
        raise ConfigError(str(error)) from None
    if not prompts or not refs:
        raise ConfigError(f"{len(prompts)} prompts in {prompts_file} and {len(refs)} references: need at least one each")
    detect = None  # background=white and no face_model: evaluate thresholds, no Face Sim.
    if config.background != "white" or config.face_model:
        from curate.people import make_detector
        detect = make_detector("mediapipe" if config.background == "white" else config.background).detect
    Path(out).mkdir(parents=True, exist_ok=True)
    try:
        return evaluate(adapter, prompts, refs, out, config, detect)
    except AdapterError as error:
        raise ConfigError(str(error)) from None


def demo_stage2(out: Path, pairs_dir: Path, overwrite: bool) -> list[str]:
    """The demo's Stage II: two steps of the tiny IP-Adapter (configs/stage2-tiny.yaml) on a tiny SDXL
    pipeline (OUT/base) over the real_pair shards in ``pairs_dir`` (OUT/run, its adapter OUT/run/final),
    then one image from the saved adapter by a stock StableDiffusionXLPipeline + load_ip_adapter,
    the first pair's reference as the image prompt (OUT/generated.png). Returns summary lines."""
    import torch
    from PIL import Image

    from ray_jobs.config import load_config
    from train.data.kinds import place
    from train.evaluate import load_pipeline, read_references
    from train.models.personalizer import read_identity
    from train.models.tiny import build_tiny_sdxl_pipeline
    from train.stage2 import Stage2Config

    out = Path(out)
    base = out / "base" if (out / "base" / "model_index.json").exists() else build_tiny_sdxl_pipeline(out / "base")
    config = load_config(Stage2Config, "stage2-tiny", [f"base={base}", f"image_encoder={base / 'ip_image_encoder'}",
                                                       'image_encoder_subfolder=""', "steps=2", "checkpoint_every=2",
                                                       "validation_samples=0"])
    result = run_train_stage2(config, str(pairs_dir), out / "run", overwrite=overwrite, progress=False)
    adapter = Path(result["final"])
    pipe = load_pipeline(adapter, read_identity(adapter), str(base), "cpu")
    (name, reference), = read_references(str(pairs_dir), 1)
    side = pipe.image_encoder.config.image_size
    prompt = "a person walking in a park"
    image = pipe(prompt, ip_adapter_image=Image.fromarray(place(reference, (side, side), 255)), height=96, width=64,
                 num_inference_steps=4, generator=torch.Generator().manual_seed(0)).images[0]
    image.save(out / "generated.png")
    losses = " -> ".join(f"{loss:.4f}" for loss in result["losses"]) or "(already trained)"
    return [f"stage2: {result['step']} IP-Adapter steps on the tiny SDXL base over {pairs_dir} (loss {losses})",
            f"stage2: adapter for load_ip_adapter: {adapter}",
            f"stage2: a stock StableDiffusionXLPipeline + load_ip_adapter drew {out / 'generated.png'} from "
            f"reference {name} and {prompt!r}"]


def standardize_stage(config, in_dir: str, out_dir: str):
    """(the stage, its work list, the resolved config) for ``in_dir`` -> ``out_dir``; ConfigError
    (before any work) for a folder that is not a checkpoint or input shards of another kind."""
    import dataclasses

    from train.models.standardizer import CheckpointError, read_identity
    from train.standardize import INPUT_KINDS, StandardizeStage

    try:
        identity = read_identity(config.checkpoint)
    except CheckpointError as error:
        raise ConfigError(str(error)) from None
    config = dataclasses.replace(config, checkpoint=str(Path(config.checkpoint).resolve()),
                                 checkpoint_sha256=identity["weights_sha256"])
    kinds, shards = records_by_shard(in_dir)
    if not shards:
        raise FileNotFoundError(f"--in {in_dir}: no shards found")
    if len(kinds) > 1 or not kinds <= set(INPUT_KINDS):
        raise ConfigError(f"--in {in_dir} holds {', '.join(sorted(kinds))} records; standardize reads one of "
                          f"{', '.join(INPUT_KINDS)} (real photos: once curate.photos writes photo records)")
    (kind,) = kinds
    return StandardizeStage(config, kind, identity), shards, config


def run_standardize(config, in_dir: str | Path, out_dir: str | Path, options: RunOptions = RunOptions(),
                    first_shards: int | None = None) -> RunSummary:
    """The standardizer of ``config.checkpoint`` over the pairs in ``in_dir`` (its first
    ``first_shards`` shards, or all) -> ``standardized`` shards in ``out_dir`` (one per input
    shard; a re-run redoes only the shards not complete)."""
    in_dir, out_dir = storage.absolute(in_dir), storage.absolute(out_dir)
    if config.gpus > 0 and options.address is None and options.runner == "ray":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("standardize asks gpus=1 per worker but this machine has no GPU: --set gpus=0 "
                              "device=cpu to run on CPUs, or --address a cluster with GPUs")
    stage, shards, config = standardize_stage(config, in_dir, out_dir)
    shards = shards[:first_shards] if first_shards else shards
    prepare_output(config, out_dir, out_dir, options.overwrite)
    return run_job(stage, shards, out_dir, config, options)
