"""What the trainers (Stage I, Stage II, the router) share around their own model and loss: the
device and mixed precision, one optimizer step, checkpoints written whole (a scratch folder renamed
into place, the oldest pruned) and found again for resume, and the training loop itself. torch is
imported inside the functions."""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path


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
