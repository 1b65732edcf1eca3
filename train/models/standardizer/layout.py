"""The checkpoint layout of a standardizer, and the checks made on it before any work; no torch.

A checkpoint is a folder with one ``save_pretrained`` folder per module, each with its config::

    standardizer.json     identity: model name, format, FBDM/RPIM switches, resolution, weights hash,
                          the standard pose (keypoints of the target A-pose at that resolution)
    reference_unet/       UNet2DConditionModel (the ReferenceNet)
    denoising_unet/       UNet2DConditionModel
    pose_guider/          PoseGuider (target pose -> features added after the denoising UNet's conv_in)
    reference_adapter/    ReferenceAdapter: FBDM tokens and RPIM (absent when both are switched off)
    vae/ image_encoder/ scheduler/   the frozen parts, as the base model gave them
    training_state.pt     (training checkpoints only) optimizer, EMA, RNG, loader state, step"""
from __future__ import annotations

from pathlib import Path

from train.models.identity import files_hash, read_identity_file

MODEL_NAME = "pairforge-standardizer"
FORMAT = 1
IDENTITY_FILE = "standardizer.json"
TRAINABLE = ("reference_unet", "denoising_unet", "pose_guider", "reference_adapter")
FROZEN = ("vae", "image_encoder", "scheduler")


class CheckpointError(ValueError):
    """A folder that is not a standardizer checkpoint this code can load; the message says what to give."""


def read_identity(path: str | Path) -> dict:
    """The identity of the checkpoint at ``path``; raises CheckpointError naming what the folder is instead."""
    def base_model_hint(found):
        return (" (a diffusers pipeline or base model: train a standardizer from it with "
                "`pairforge train stage1 --set base=...`)") if "unet" in found or "model_index.json" in found else ""

    folder = Path(path)
    identity = read_identity_file(folder, "--checkpoint", "a standardizer checkpoint", IDENTITY_FILE, MODEL_NAME, FORMAT,
                                  "`pairforge train stage1` (OUT/checkpoints/step-NNNNNN or OUT/final)",
                                  CheckpointError, base_model_hint)
    missing = [m for m in (*TRAINABLE, *FROZEN) if not (folder / m).is_dir()
               and not (m == "reference_adapter" and not (identity["fbdm"] or identity["rpim"]))]
    if missing:
        raise CheckpointError(f"--checkpoint {folder} is incomplete: missing {', '.join(missing)}/")
    return identity


def weights_hash(folder: str | Path) -> str:
    """sha256 (16 hex) of the trainable modules' weight files: what records made with it carry."""
    return files_hash(folder, TRAINABLE)


def required_multiple(unet_config: dict) -> int:
    """Pixels per side must be a multiple of this: the VAE's factor 8 times the UNet's downsampling
    (2 per down block but the last), so every level's feature map has whole sizes (64 for SD-1.5)."""
    return 8 * 2 ** (len(unet_config["down_block_types"]) - 1)


def check_resolution(resolution, unet_config: dict) -> None:
    """Raise ValueError naming the nearest valid sizes when ``resolution`` (w, h) does not fit the UNet."""
    multiple = required_multiple(unet_config)
    bad = [v for v in resolution if v <= 0 or v % multiple]
    if bad:
        near = [max(multiple, round(v / multiple) * multiple) for v in resolution]
        raise ValueError(f"resolution {list(resolution)}: each side must be a multiple of {multiple} for this UNet "
                         f"(the VAE's 8 x 2 per downsampling level); use e.g. resolution=[{near[0]}, {near[1]}]")
