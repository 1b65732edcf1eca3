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

import hashlib
import json
from pathlib import Path

MODEL_NAME = "pairforge-standardizer"
FORMAT = 1
IDENTITY_FILE = "standardizer.json"
TRAINABLE = ("reference_unet", "denoising_unet", "pose_guider", "reference_adapter")
FROZEN = ("vae", "image_encoder", "scheduler")


class CheckpointError(ValueError):
    """A folder that is not a standardizer checkpoint this code can load; the message says what to give."""


def read_identity(path: str | Path) -> dict:
    """The identity of the checkpoint at ``path``; raises CheckpointError naming what the folder is instead."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"--checkpoint {folder}: no such folder; give a checkpoint folder written by "
                              f"`pairforge train stage1` (OUT/checkpoints/step-NNNNNN or OUT/final)")
    try:
        identity = json.loads((folder / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        found = sorted(p.name for p in folder.iterdir())[:8]
        hint = (" (a diffusers pipeline or base model: train a standardizer from it with "
                "`pairforge train stage1 --set base=...`)") if "unet" in found or "model_index.json" in found else ""
        raise CheckpointError(f"--checkpoint {folder} is not a standardizer checkpoint: it has no readable "
                              f"{IDENTITY_FILE} (it holds {found}){hint}") from None
    if identity.get("model") != MODEL_NAME:
        raise CheckpointError(f"--checkpoint {folder} is a {identity.get('model')!r} checkpoint, not a {MODEL_NAME}")
    if identity.get("format") != FORMAT:
        raise CheckpointError(f"--checkpoint {folder}: layout format {identity.get('format')} (this pairforge reads "
                              f"format {FORMAT}); use the pairforge version that wrote it")
    missing = [m for m in (*TRAINABLE, *FROZEN) if not (folder / m).is_dir()
               and not (m == "reference_adapter" and not (identity["fbdm"] or identity["rpim"]))]
    if missing:
        raise CheckpointError(f"--checkpoint {folder} is incomplete: missing {', '.join(missing)}/")
    return identity


def weights_hash(folder: str | Path) -> str:
    """sha256 (16 hex) of the trainable modules' weight files: what records made with it carry."""
    digest = hashlib.sha256()
    for module in TRAINABLE:
        for file in sorted((Path(folder) / module).glob("*.safetensors")):
            digest.update(f"{module}/{file.name}".encode())
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


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
