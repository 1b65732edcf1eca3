"""What the trainers (Stage I, the router) share around their own model and loss: the device and
mixed precision, one optimizer step, and checkpoints written whole (a scratch folder renamed into
place, the oldest pruned) and found again for resume. torch is imported inside the functions."""
from __future__ import annotations

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
