"""Building a standardizer from base weights, and saving and loading its checkpoint layout
(``layout.py``). The base is an SD-1.5-family model by hub id or folder (its ``unet``, ``vae`` and
``scheduler`` subfolders; both UNets start from the same weights, as in Animate Anyone) and a CLIP
image encoder by hub id or folder; tests pass the folder of ``train.models.tiny.build_tiny_base``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from train.models.standardizer import layout
from train.models.standardizer.modules import classes, self_attention_names


@dataclass
class FrozenParts:
    """What the standardizer uses but never trains: the VAE, the CLIP image encoder, the noise schedule."""
    vae: object
    image_encoder: object
    scheduler: object

    def to(self, device) -> "FrozenParts":
        self.vae.to(device)
        self.image_encoder.to(device)
        return self


def _adapter(reference_unet, fbdm: bool, rpim: bool):
    if not (fbdm or rpim):
        return None
    layers = {name: reference_unet.get_submodule(name.removesuffix(".processor")).to_q.in_features
              for name in self_attention_names(reference_unet)}
    return classes().ReferenceAdapter(layers=layers, fbdm=fbdm, rpim=rpim)


def _frozen(vae, image_encoder, scheduler) -> FrozenParts:
    vae.requires_grad_(False).eval()
    image_encoder.requires_grad_(False).eval()
    return FrozenParts(vae, image_encoder, scheduler)


def load_base(base: str, image_encoder: str, fbdm: bool = True, rpim: bool = True, revision: str | None = None):
    """(Standardizer, FrozenParts) from an SD-1.5-family ``base`` and a CLIP vision ``image_encoder``
    (hub ids or folders): both UNets from the base UNet, a new pose guider and FBDM/RPIM adapter."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    reference = UNet2DConditionModel.from_pretrained(base, subfolder="unet", revision=revision)
    denoising = UNet2DConditionModel.from_pretrained(base, subfolder="unet", revision=revision)
    encoder = CLIPVisionModelWithProjection.from_pretrained(image_encoder)
    if encoder.config.projection_dim != denoising.config.cross_attention_dim:
        raise layout.CheckpointError(
            f"image_encoder {image_encoder}: CLIP projection_dim {encoder.config.projection_dim} != the UNet's "
            f"cross_attention_dim {denoising.config.cross_attention_dim}; pick an encoder of the base's width "
            f"(ViT-L/14 for SD-1.5)")
    guider = classes().PoseGuider(embedding_channels=denoising.config.block_out_channels[0])
    model = classes().Standardizer(reference, denoising, guider, _adapter(reference, fbdm, rpim))
    frozen = _frozen(AutoencoderKL.from_pretrained(base, subfolder="vae", revision=revision), encoder,
                     DDPMScheduler.from_pretrained(base, subfolder="scheduler", revision=revision))
    return model, frozen


def save_checkpoint(path: str | Path, model, frozen: FrozenParts, resolution, standard_pose=None,
                    extra: dict | None = None) -> dict:
    """Write the layout of ``model`` (unwrapped from DDP) and ``frozen`` to ``path``; returns its identity."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name in layout.TRAINABLE:
        module = getattr(model, name)
        if module is not None:
            module.save_pretrained(path / name)
    frozen.vae.save_pretrained(path / "vae")
    frozen.image_encoder.save_pretrained(path / "image_encoder")
    frozen.scheduler.save_pretrained(path / "scheduler")
    adapter = model.reference_adapter
    identity = {"model": layout.MODEL_NAME, "format": layout.FORMAT,
                "fbdm": bool(adapter is not None and adapter.config.fbdm),
                "rpim": bool(adapter is not None and adapter.config.rpim),
                "resolution": list(resolution), "weights_sha256": layout.weights_hash(path),
                "standard_pose": standard_pose, **(extra or {})}
    (path / layout.IDENTITY_FILE).write_text(json.dumps(identity, indent=1))
    return identity


def load_checkpoint(path: str | Path):
    """(Standardizer, FrozenParts, identity) from a checkpoint folder; CheckpointError if it is not one."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    identity = layout.read_identity(path)
    path = Path(path)
    made = classes()
    adapter = made.ReferenceAdapter.from_pretrained(path / "reference_adapter") \
        if identity["fbdm"] or identity["rpim"] else None
    model = made.Standardizer(UNet2DConditionModel.from_pretrained(path / "reference_unet"),
                              UNet2DConditionModel.from_pretrained(path / "denoising_unet"),
                              made.PoseGuider.from_pretrained(path / "pose_guider"), adapter)
    frozen = _frozen(AutoencoderKL.from_pretrained(path / "vae"),
                     CLIPVisionModelWithProjection.from_pretrained(path / "image_encoder"),
                     DDPMScheduler.from_pretrained(path / "scheduler"))
    return model, frozen, identity


def clip_image_embeds(image_encoder, images):
    """Images in [-1, 1] (B x 3 x H x W) -> CLIP image embeddings B x 1 x D: resized (squashed, as
    Animate Anyone feeds it) to the encoder's size and normalised with CLIP's mean and std in torch,
    on the images' device."""
    import torch
    import torch.nn.functional as F
    from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    size = image_encoder.config.image_size
    x = F.interpolate(images.float(), (size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(OPENAI_CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD, device=x.device).view(1, 3, 1, 1)
    x = ((x + 1) / 2 - mean) / std
    dtype = next(image_encoder.parameters()).dtype
    return image_encoder(pixel_values=x.to(dtype)).image_embeds.unsqueeze(1)
