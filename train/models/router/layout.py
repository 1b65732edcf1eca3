"""The router's checkpoint layout and the checks made on it before any work; no torch.

A checkpoint is a folder::

    router.json         identity: model name, format, the base and image encoder it was trained on
                        (hub ids or folders: the frozen UNet, VAE, text encoders, scheduler and CLIP
                        vision are read from there, not copied), resolution, subject size, eta,
                        gamma, ReferenceNet on/off, weights hash, step
    router/             Router (save_pretrained): the routing QFormer and one RouteLayer per
                        cross-attention layer (what trains)
    subject_encoder/    SubjectEncoder (save_pretrained): the frozen subject QFormer and IP keys/values
    reference_unet/     the frozen ReferenceNet (only when it is not the base UNet)
    training_state.pt   (training checkpoints only) optimizer, scaler, loader state, step"""
from __future__ import annotations

from pathlib import Path

from train.models.identity import files_hash, read_identity_file

MODEL_NAME = "pairforge-router"
FORMAT = 1
IDENTITY_FILE = "router.json"
REQUIRED = ("router", "subject_encoder")


class CheckpointError(ValueError):
    """A folder that is not a router checkpoint this code can load; the message says what to give."""


def read_identity(path: str | Path) -> dict:
    """The identity of the router checkpoint at ``path``; CheckpointError naming what it is instead."""
    folder = Path(path)
    identity = read_identity_file(folder, "--router", "a router checkpoint", IDENTITY_FILE, MODEL_NAME, FORMAT,
                                  "`pairforge train router` (OUT/checkpoints/step-NNNNNN or OUT/final)", CheckpointError)
    missing = [m for m in REQUIRED if not (folder / m).is_dir()]
    if missing:
        raise CheckpointError(f"--router {folder} is incomplete: missing {', '.join(missing)}/")
    return identity


MOVABLE = ("base", "image_encoder", "image_encoder_subfolder")  # read from elsewhere, not stored in the checkpoint


def resolve_identity(path: str | Path, overrides=()) -> dict:
    """``read_identity`` with ``overrides`` ("base=DIR", ...: where the frozen parts are now) applied;
    CheckpointError naming a frozen part whose recorded folder is gone, and the override to give."""
    identity = read_identity(path)
    for item in overrides:
        key, equals, value = item.partition("=")
        if not equals or key not in MOVABLE:
            raise CheckpointError(f"--set {item}: give KEY=VALUE with KEY one of {', '.join(MOVABLE)}")
        identity[key] = value
    for key in ("base", "image_encoder"):
        where = Path(identity[key])
        if where.is_absolute() and not where.exists():
            raise CheckpointError(f"--router {path}: its frozen {key} {where} is gone (a checkpoint stores only "
                                  f"router/ and subject_encoder/ and reads the rest from there); point at where it "
                                  f"is now with --set {key}=DIR")
    return identity


def weights_hash(folder: str | Path) -> str:
    """sha256 (16 hex) of the router's and subject encoder's weight files."""
    return files_hash(folder, REQUIRED)