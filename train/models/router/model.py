"""Building the router on a base, saving and loading its checkpoints (``layout.py``), and what the
trainer and ``segment`` share: text and CLIP encoding and the routing loss. The base is an
SDXL-family model by hub id or folder (``unet``, ``vae``, ``scheduler``, ``text_encoder(_2)``,
``tokenizer(_2)``) and a CLIP vision encoder by hub id or folder; tests pass the folder of
``train.models.tiny.build_tiny_sdxl_base``. The subject encoder (subject QFormer, IP keys/values,
ReferenceNet) is AnyStory's first training stage: read from ``subject_encoder`` (a folder holding
``subject_encoder/`` and optionally ``reference_unet/``) or, until one exists, made fresh from a seed
(the ReferenceNet then is the base UNet); either way it stays frozen."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from train.models.router import layout
from train.models.router.modules import classes, cross_attention_names
from train.models.standardizer.modules import grid_of, parameter_key


@dataclass
class FrozenParts:
    """What the router uses but never trains, besides the UNets: VAE, text encoders, CLIP vision, the
    base's sampler (``scheduler``, SDXL's Euler) and its training forward process (``forward_process``:
    DDPM's sqrt(a) x + sqrt(1 - a) eps on the same schedule, what the UNet was trained on; Euler's
    add_noise is x + sigma eps, an input that only its sampler's scaling makes right)."""
    vae: object
    text_encoder: object
    text_encoder_2: object
    tokenizer: object
    tokenizer_2: object
    image_encoder: object
    scheduler: object
    forward_process: object

    def to(self, device) -> "FrozenParts":
        for module in (self.vae, self.text_encoder, self.text_encoder_2, self.image_encoder):
            module.to(device)
        return self


def load_frozen_parts(base: str, image_encoder: str, image_encoder_subfolder: str = "", revision: str | None = None):
    from diffusers import AutoencoderKL, DDPMScheduler, EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

    scheduler = EulerDiscreteScheduler.from_pretrained(base, subfolder="scheduler", revision=revision)
    parts = FrozenParts(
        AutoencoderKL.from_pretrained(base, subfolder="vae", revision=revision),
        CLIPTextModel.from_pretrained(base, subfolder="text_encoder", revision=revision),
        CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2", revision=revision),
        CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", revision=revision),
        CLIPTokenizer.from_pretrained(base, subfolder="tokenizer_2", revision=revision),
        CLIPVisionModelWithProjection.from_pretrained(image_encoder, subfolder=image_encoder_subfolder),
        scheduler, DDPMScheduler.from_config(scheduler.config))
    for module in (parts.vae, parts.text_encoder, parts.text_encoder_2, parts.image_encoder):
        module.requires_grad_(False).eval()
    return parts


def _layer_widths(unet) -> tuple[dict, dict]:
    """Per cross-attention layer: the latent channels (the router's input) and the attention's inner width."""
    channels, inner = {}, {}
    for name in cross_attention_names(unet):
        attn = unet.get_submodule(name.removesuffix(".processor"))
        channels[parameter_key(name)], inner[parameter_key(name)] = attn.to_q.in_features, attn.to_k.out_features
    return channels, inner


def _assemble(unet, reference_unet, subject_encoder, router, eta: float, gamma: float):
    unet.requires_grad_(False).eval()
    subject_encoder.requires_grad_(False).eval()
    if reference_unet is not None:
        reference_unet.requires_grad_(False).eval()
    return classes().RoutedUNet(unet, subject_encoder, router, reference_unet, eta, gamma)


def load_base(base: str, image_encoder: str, image_encoder_subfolder: str = "", subject_encoder: str = "",
              reference_net: bool = True, eta: float = 1.0, gamma: float = 0.0, router_width: int = 256,
              router_depth: int = 4, subject_tokens: int = 4, subject_width: int = 768, revision: str | None = None):
    """(RoutedUNet, FrozenParts): the frozen base UNet and subject encoder with a new router (its
    initial weights come from torch's current seed: set it first)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", revision=revision)
    if unet.config.addition_embed_type != "text_time":
        raise layout.CheckpointError(f"base {base}: its UNet is not SDXL-shaped (addition_embed_type "
                                     f"{unet.config.addition_embed_type!r}, not 'text_time'); the router needs an "
                                     f"SDXL-family base such as stabilityai/stable-diffusion-xl-base-1.0")
    frozen = load_frozen_parts(base, image_encoder, image_encoder_subfolder, revision)
    channels, inner = _layer_widths(unet)
    clip_width = frozen.image_encoder.config.hidden_size
    made = classes()
    reference_unet = None
    if subject_encoder:
        encoder = made.SubjectEncoder.from_pretrained(Path(subject_encoder) / "subject_encoder")
        if reference_net and (Path(subject_encoder) / "reference_unet").is_dir():
            reference_unet = UNet2DConditionModel.from_pretrained(Path(subject_encoder) / "reference_unet")
    else:
        encoder = made.SubjectEncoder(layers=inner, clip_width=clip_width, context_width=unet.config.cross_attention_dim,
                                      tokens=subject_tokens, width=subject_width, depth=4)
    if reference_net and reference_unet is None:
        reference_unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", revision=revision)
    router = made.Router(layers=channels, clip_width=clip_width, width=router_width, depth=router_depth)
    return _assemble(unet, reference_unet, encoder, router, eta, gamma), frozen


def save_checkpoint(path: str | Path, model, identity: dict) -> dict:
    """Write the router and subject encoder of ``model`` (unwrapped from DDP) and ``identity`` (base,
    image_encoder, ... as load_checkpoint needs them) to ``path``; returns the full identity."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.router.save_pretrained(path / "router")
    model.subject_encoder.save_pretrained(path / "subject_encoder")
    full = {"model": layout.MODEL_NAME, "format": layout.FORMAT, **identity,
            "reference_net": model.reference_unet is not None, "weights_sha256": layout.weights_hash(path)}
    (path / layout.IDENTITY_FILE).write_text(json.dumps(full, indent=1))
    return full


def load_checkpoint(path: str | Path, overrides=()):
    """(RoutedUNet, FrozenParts, identity) from a router checkpoint; CheckpointError if it is not one
    or its frozen base is gone. ``overrides``: "base=DIR" etc. where the frozen parts are now."""
    from diffusers import UNet2DConditionModel

    identity = layout.resolve_identity(path, overrides)
    path, made, revision = Path(path), classes(), identity.get("revision") or None
    unet = UNet2DConditionModel.from_pretrained(identity["base"], subfolder="unet", revision=revision)
    reference_unet = None
    if identity["reference_net"]:
        reference_unet = UNet2DConditionModel.from_pretrained(path / "reference_unet") \
            if (path / "reference_unet").is_dir() else \
            UNet2DConditionModel.from_pretrained(identity["base"], subfolder="unet", revision=revision)
    model = _assemble(unet, reference_unet, made.SubjectEncoder.from_pretrained(path / "subject_encoder"),
                      made.Router.from_pretrained(path / "router"), identity["eta"], identity["gamma"])
    frozen = load_frozen_parts(identity["base"], identity["image_encoder"], identity.get("image_encoder_subfolder", ""),
                           revision)
    return model, frozen, identity


def encode_text(frozen: FrozenParts, captions: list[str], device):
    """SDXL's text conditioning: the two encoders' penultimate states concatenated (B x 77 x D) and
    the second's pooled projection (B x D2)."""
    import torch

    states = []
    for tokenizer, encoder in ((frozen.tokenizer, frozen.text_encoder), (frozen.tokenizer_2, frozen.text_encoder_2)):
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        out = encoder(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
    return torch.cat(states, dim=-1), out.text_embeds


def time_ids(size_hw: tuple[int, int], batch: int, device):
    """SDXL's micro-conditioning: original size, crop origin (0, 0), target size; the images are
    fitted to ``size_hw`` without cropping."""
    import torch

    h, w = size_hw
    return torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32, device=device).expand(batch, 6)


def clip_tokens(image_encoder, images):
    """Images in [-1, 1] (N x 3 x H x W) -> CLIP's penultimate image tokens N x T x C (IP-Adapter
    Plus's choice): resized (squashed) to the encoder's size and normalised with CLIP's mean and std."""
    import torch
    import torch.nn.functional as F
    from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    size = image_encoder.config.image_size
    x = F.interpolate(images.float(), (size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(OPENAI_CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD, device=x.device).view(1, 3, 1, 1)
    x = ((x + 1) / 2 - mean) / std
    dtype = next(image_encoder.parameters()).dtype
    return image_encoder(pixel_values=x.to(dtype), output_hidden_states=True).hidden_states[-2]


def masks_at(masks, hw: tuple[int, int]):
    """Instance masks B x S x H x W in [0, 1] -> {0, 1} at a layer's grid (area average >= 0.5)."""
    import torch.nn.functional as F

    return (F.interpolate(masks.float(), hw, mode="area") >= 0.5).float()


def routing_loss(maps: list, masks, subject_valid, latent_hw: tuple[int, int]):
    """(1/N) sum_i ||M_i - M_i^gt||^2 per layer (the squared error averaged over the layer's pixels,
    so every resolution weighs the same), averaged over layers and samples; padded subjects
    (subject_valid 0) are left out of both the sum and N. The whole instance mask is the target,
    however the reference is cropped. Multiply by lambda outside."""
    valid = subject_valid.float()
    total = 0.0
    for soft in maps:
        b, routes, n = soft.shape
        h, w = grid_of(n, *latent_hw)
        target = masks_at(masks, (h, w)).flatten(2)                       # B x S x hw
        error = (soft[:, :routes - 1].float() - target).square().mean(-1)  # B x S
        total = total + ((error * valid).sum(1) / valid.sum(1).clamp(min=1)).mean()
    return total / len(maps)


class Conditioning:
    """The frozen encoders' view of a batch: everything the RoutedUNet takes besides the noisy latent."""

    def __init__(self, frozen, device):
        self.frozen, self.device = frozen, device
        self._background = None

    def background(self, size_hw):
        """CLIP tokens of a black image: the background route's input (computed once)."""
        import torch

        if self._background is None:
            self._background = clip_tokens(self.frozen.image_encoder, -torch.ones(1, 3, *size_hw, device=self.device))
        return self._background

    def __call__(self, b: dict, reference_net: bool) -> dict:
        import torch

        with torch.no_grad():
            n, s = b["subjects"].shape[:2]
            subjects = b["subjects"].flatten(0, 1)
            text, pooled = encode_text(self.frozen, list(b["caption"]), self.device)
            scale = self.frozen.vae.config.scaling_factor
            return {"text_states": text,
                    "added_cond": {"text_embeds": pooled, "time_ids": time_ids(tuple(b["image"].shape[-2:]), n, self.device)},
                    "subject_tokens": clip_tokens(self.frozen.image_encoder, subjects).unflatten(0, (n, s)),
                    "background_tokens": self.background(tuple(subjects.shape[-2:])),
                    "subject_valid": b["subject_valid"],
                    "subject_latents": (self.frozen.vae.encode(subjects).latent_dist.mode() * scale).unflatten(0, (n, s))
                    if reference_net else None}
