"""What the trainers (Stage I, Stage II, the router) share around their own model and loss: the
checks before any work (record kind, SDXL base, loop settings), the device and mixed precision, DDP,
optimizer, scaler and EMA, the resampled loader resumed where a checkpoint stopped, one optimizer
step, checkpoints written whole (a scratch folder renamed into place, the oldest pruned) and found
again for resume, and the training loop itself. torch is imported inside the functions."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

from train.data import DatasetKindError, ShardLoader, ShardSet, ShardStream

log = logging.getLogger(__name__)
PRECISIONS = ("no", "fp16", "bf16")


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint (one with its training state) under OUT/checkpoints."""
    done = sorted(p for p in (Path(out) / "checkpoints").glob("step-*") if (p / "training_state.pt").exists())
    return done[-1] if done else None


def training_device(device, mixed_precision: str):
    """(torch device, autocast dtype or None): the current CUDA device when there is one, else the
    CPU; fp16/bf16 autocast only on CUDA, with TF32 matmuls allowed there."""
    import torch

    device = torch.device(device or (f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        return device, None
    torch.backends.cuda.matmul.allow_tf32 = True
    return device, {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)


def check_loop_settings(config) -> None:
    """ValueError, before any work, for the settings Stage I and Stage II check alike: the mixed
    precision and the loop's counts (steps, checkpoints, logs, validation samples and their steps)."""
    if config.mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed_precision {config.mixed_precision!r}: use one of {', '.join(PRECISIONS)}")
    if min(config.batch_size, config.steps, config.checkpoint_every, config.keep_checkpoints, config.log_every,
           config.inference_steps) < 1 or config.num_workers < 0 or config.validation_samples < 0:
        raise ValueError("batch_size, steps, checkpoint_every, keep_checkpoints, log_every and inference_steps "
                         "must be >= 1; num_workers and validation_samples >= 0")


def kind_dataset(data, kinds: tuple[str, ...], split: str | None, job: str, source: str) -> ShardSet:
    """The shards of ``data`` (of one split) holding the first of ``kinds`` found; before any work, a
    DatasetKindError saying that ``job`` reads those kinds and whose --out to give (``source``)."""
    problems = []
    for kind in kinds:
        try:
            return ShardSet.load(data, kind=kind, split=split)
        except DatasetKindError as error:
            problems.append(str(error))
    raise DatasetKindError(f"{problems[0].split('; this loader')[0]}; {job} reads {' or '.join(kinds)} shards: "
                           f"give the --out of {source}")


def check_sdxl_unet(base: str, revision: str, needs: str) -> dict:
    """The base's UNet config, read before any work; ValueError unless it is SDXL-shaped (what
    ``needs``, e.g. "the router", is built on)."""
    from diffusers import UNet2DConditionModel

    unet_config = UNet2DConditionModel.load_config(base, subfolder="unet", revision=revision or None)
    if unet_config.get("addition_embed_type") != "text_time":
        raise ValueError(f"base {base}: not an SDXL-family UNet (addition_embed_type "
                         f"{unet_config.get('addition_embed_type')!r}); {needs} needs e.g. "
                         f"stabilityai/stable-diffusion-xl-base-1.0")
    return unet_config


def distributed_optimizer(model, parameters: list, config, device, autocast_dtype, world_size: int,
                          ema_decay: float = 0.0, **ddp_options) -> tuple:
    """(the module a step calls: ``model``, or its DDP wrapper when ``world_size`` > 1; AdamW over
    ``parameters``; the gradient scaler, on for fp16 only; an EMA of ``parameters`` or None).
    DDP without find_unused_parameters: a trainer freezes what no loss reaches instead."""
    import torch

    ddp = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=False, **ddp_options)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype is torch.float16)
    ema = None
    if ema_decay > 0:
        from diffusers.training_utils import EMAModel
        ema = EMAModel(parameters, decay=ema_decay)
    return ddp, optimizer, scaler, ema


def resumed_loader(trainer, decoder, resume: Path | None, **loader_options) -> tuple:
    """(stream, loader, step): this rank's endless (resampled) stream of ``trainer.shards`` and its
    loader; with a ``resume`` checkpoint, the loader, optimizer, scaler and EMA put back where it
    stopped (else step 0)."""
    config = trainer.config
    stream = ShardStream(trainer.shards, decoder, config.batch_size, rank=trainer.rank, world_size=trainer.world_size,
                         seed=config.seed, resampled=True)
    loader = ShardLoader(stream, num_workers=config.num_workers, **loader_options)
    step = 0
    if resume is not None:
        step = restore_training_state(resume, trainer.device, trainer.optimizer, trainer.scaler, trainer.ema, loader)
        log.info("resumed from %s at step %d", resume, step)
    return stream, loader, step


def optimizer_step(loss, optimizer, scaler, parameters, max_grad_norm: float) -> None:
    """Backward through the gradient scaler, clip the unscaled gradients, step, update the scale."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    apply_gradients(optimizer, scaler, parameters, max_grad_norm)


def apply_gradients(optimizer, scaler, parameters, max_grad_norm: float) -> None:
    """Clip the unscaled gradients already accumulated (one backward or several), step, update the scale."""
    import torch

    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    scaler.step(optimizer)
    scaler.update()


@contextlib.contextmanager
def ema_weights(ema, parameters):
    """``parameters`` hold the EMA weights meanwhile (to save them), their own again after; nothing
    happens when ``ema`` is None."""
    if ema is None:
        yield
        return
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        yield
    finally:
        ema.restore(parameters)


def training_state(optimizer, scaler, ema, loader, step: int) -> dict:
    """What a checkpoint keeps besides the model, for an exact resume: optimizer, gradient scaler,
    EMA (None without), the loader's position and the step."""
    return {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "step": step,
            "loader": json.dumps(loader.state_dict())}


def restore_training_state(folder: Path, device, optimizer, scaler, ema, loader) -> int:
    """Put a checkpoint's ``training_state`` back into these objects; returns its step."""
    import torch

    state = torch.load(folder / "training_state.pt", map_location=device, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    loader.load_state_dict(json.loads(state["loader"]))
    return int(state["step"])


def write_checkpoint(folder: Path, write_model, training_state: dict | None, keep: int) -> Path:
    """``folder`` (OUT/checkpoints/step-N) written whole: ``write_model(scratch)`` and the training
    state into a scratch folder, renamed into place; the checkpoints beyond the newest ``keep`` removed."""
    import torch

    scratch = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    write_model(scratch)
    if training_state is not None:
        torch.save(training_state, scratch / "training_state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
    for old in sorted(folder.parent.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def run_steps(trainer, config, out: Path, rank: int, world_size: int, validate, report=None, progress: bool = False,
              reported: tuple = ()) -> dict:
    """The loop every trainer runs: ``trainer.train_step`` over ``trainer.loader`` to
    ``config.steps``, losses to TensorBoard (OUT/logs, rank 0) and the console, ``validate(step,
    writer)`` (rank 0, every ``validate_every`` steps and at the end; returns figures, None where it
    has nothing to do), a checkpoint every ``checkpoint_every`` steps with ``report(metrics)`` on
    every rank (Ray Train's ``ray.train.report``: the losses and the figures named in ``reported``),
    the keys each rank read (OUT/ranks/rank-R.json), and OUT/final from ``trainer.save_final()``.
    A step's loss is a float or a dict of named floats. Returns the run's figures."""
    import time

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "logs"))
    start_step, started, losses, figures = trainer.step, time.perf_counter(), [], {}
    for batch in trainer.loader:
        if trainer.step >= config.steps:
            break
        losses.append(trainer.train_step(batch))
        step = trainer.step
        named = losses[-1] if isinstance(losses[-1], dict) else {"loss": losses[-1]}
        if rank == 0 and step % config.log_every == 0:
            for name, value in named.items():
                writer.add_scalar(f"train/{name}", value, step)
            if progress:
                print(f"step {step}/{config.steps} " + " ".join(f"{k} {v:.4f}" for k, v in named.items()), flush=True)
        last = step == config.steps
        if rank == 0 and ((config.validate_every and step % config.validate_every == 0) or last):
            figures = validate(step, writer) or figures
        if step % config.checkpoint_every == 0 or last:
            if rank == 0:
                figures["checkpoint"] = str(trainer.save())
            if report is not None:
                report({"step": step, **named, **{k: v for k, v in figures.items() if k in reported}})
    seconds = time.perf_counter() - started
    steps = trainer.step - start_step
    problems = trainer.stream.problems
    (out / "ranks").mkdir(parents=True, exist_ok=True)
    (out / "ranks" / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "world_size": world_size,
                                                                 "keys": trainer.keys_read, "problems": problems}))
    result = {"rank": rank, "step": trainer.step, "steps_run": steps, "losses": losses,
              "samples_per_s": steps * config.batch_size / seconds if steps else 0.0, "problems": len(problems),
              **figures}
    if rank == 0:
        result["final"] = str(trainer.save_final())
        writer.close()
    return result
