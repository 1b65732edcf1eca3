"""A tiny SD-1.5-shaped base (UNet 32/64 channels, an f=8 VAE, the SD noise schedule) and a tiny
CLIP vision encoder with projection, built from configs and saved with ``save_pretrained`` in the
layout ``load_base`` reads: for tests, the demo and ``pairforge bench train``; beside it a tiny
SDXL-shaped base (``build_tiny_sdxl_base``) and the router's (``build_tiny_router_base``: its VAE
encoder, and if asked its UNet, fitted on pictures of shapes). Random weights otherwise; the shapes
and code paths are SD-1.5's and SDXL's."""
from __future__ import annotations

import json
from pathlib import Path

TINY_WIDTH = 32  # the UNet's cross-attention width = the CLIP projection


def build_tiny_base(path: str | Path, seed: int = 0) -> Path:
    """Write ``path``/unet, vae, scheduler and image_encoder; returns ``path``. Pixel sizes must be
    multiples of 16 (8 for the VAE x 2 for the UNet's one downsampling)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = Path(path)
    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_WIDTH, attention_head_dim=8, norm_num_groups=16,
    ).save_pretrained(path / "unet")
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
    ).save_pretrained(path / "vae")
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False, steps_offset=1).save_pretrained(path / "scheduler")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=4, projection_dim=TINY_WIDTH)).save_pretrained(path / "image_encoder")
    return path


def tiny_clip_tokenizer():
    """An offline CLIP tokenizer for tiny text encoders: printable ASCII characters (and their
    end-of-word forms) as the vocabulary, no merges, CLIP's special tokens; 192 ids."""
    from transformers import CLIPTokenizer

    alphabet = [chr(c) for c in range(33, 127)]
    vocab = {token: i for i, token in enumerate(alphabet + [a + "</w>" for a in alphabet]
                                                + ["<|startoftext|>", "<|endoftext|>"])}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_tiny_sdxl_base(path: str | Path, seed: int = 0) -> Path:
    """An SDXL-shaped base in the diffusers pipeline layout: ``path``/unet (two levels, cross-attention
    in both and in the mid block: 7 cross-attention layers, ``addition_embed_type="text_time"``),
    vae, scheduler, text_encoder + tokenizer and text_encoder_2 (with projection: the pooled
    embedding) + tokenizer_2 (their penultimate states concatenated: the UNet's 64-wide context),
    and image_encoder (CLIP vision with projection). Pixel sizes must be multiples of 16."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    path = Path(path)
    torch.manual_seed(seed)
    text_width, time_width = TINY_WIDTH, 8
    UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=2 * text_width,
        attention_head_dim=8, norm_num_groups=16, addition_embed_type="text_time",
        addition_time_embed_dim=time_width, projection_class_embeddings_input_dim=text_width + 6 * time_width,
    ).save_pretrained(path / "unet")
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64, scaling_factor=0.13025,
    ).save_pretrained(path / "vae")
    EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                           beta_schedule="scaled_linear", steps_offset=1).save_pretrained(path / "scheduler")
    tokenizer = tiny_clip_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    CLIPTextModel(CLIPTextConfig(**text)).save_pretrained(path / "text_encoder")
    CLIPTextModelWithProjection(CLIPTextConfig(**text, projection_dim=text_width)).save_pretrained(path / "text_encoder_2")
    tokenizer.save_pretrained(path / "tokenizer")
    tokenizer.save_pretrained(path / "tokenizer_2")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=4, projection_dim=TINY_WIDTH)).save_pretrained(path / "image_encoder")
    return path


def build_tiny_sdxl_pipeline(path: str | Path, seed: int = 0) -> Path:
    """``build_tiny_sdxl_base`` plus what Stage II's tests need of a stock SDXL folder: model_index.json
    (so ``StableDiffusionXLPipeline.from_pretrained(path)`` reads it; no image encoder listed, as in
    SDXL's own, so ``load_ip_adapter`` takes the adapter's) and ``ip_image_encoder/``: a CLIP vision
    tower at 64 px in 4-px patches, whose penultimate states are 257 tokens like ViT-H/14's at 224 px."""
    import diffusers
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = build_tiny_sdxl_base(path, seed)
    parts = {"unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
             "scheduler": ("diffusers", "EulerDiscreteScheduler"), "text_encoder": ("transformers", "CLIPTextModel"),
             "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
             "tokenizer": ("transformers", "CLIPTokenizer"), "tokenizer_2": ("transformers", "CLIPTokenizer"),
             "image_encoder": (None, None), "feature_extractor": (None, None)}
    (path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline",
                                                       "_diffusers_version": diffusers.__version__,
                                                       "force_zeros_for_empty_prompt": True, **parts}, indent=1))
    torch.manual_seed(seed + 1)
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=64,
        patch_size=4, projection_dim=TINY_WIDTH)).save_pretrained(path / "ip_image_encoder")
    return path


def build_tiny_standardizer(path: str | Path, standard_pose, resolution: tuple[int, int] = (64, 96),
                            seed: int = 0) -> Path:
    """An untrained standardizer checkpoint at ``path`` (the layout ``load_checkpoint`` reads, with
    ``standard_pose``: 18 OpenPose keypoints at ``resolution``) made from the tiny base: the whole
    inference path in a second, for pairs' tests and ``pairforge plan`` where no trained one exists."""
    import tempfile

    import torch

    from train.models.standardizer import load_base, save_checkpoint

    with tempfile.TemporaryDirectory(prefix="tiny-base-") as scratch:
        base = build_tiny_base(Path(scratch) / "base", seed)
        torch.manual_seed(seed)
        model, frozen = load_base(str(base), str(base / "image_encoder"))
        save_checkpoint(path, model, frozen, list(resolution), [list(map(float, p)) for p in standard_pose])
    return Path(path)


def colour_shapes(count: int, height: int, width: int, generator, ellipses: bool = False):
    """Seeded pictures in [-1, 1] (count x 3 x height x width): a smooth colour field with 5 boxes of
    flat colour, or (``ellipses``) each box or the ellipse inscribed in it, by a coin flip."""
    import torch
    import torch.nn.functional as F

    x = F.interpolate(torch.rand(count, 3, 3, 3, generator=generator) * 2 - 1, (height, width), mode="bilinear")
    rows, columns = torch.arange(height).view(1, 1, -1, 1), torch.arange(width).view(1, 1, 1, -1)
    for _ in range(5):
        colour = torch.rand(count, 3, 1, 1, generator=generator) * 2 - 1
        top, left = (torch.randint(0, n, (count, 1, 1, 1), generator=generator) for n in (height, width))
        tall, wide = (torch.randint(2, n // 2, (count, 1, 1, 1), generator=generator) for n in (height, width))
        shape = (rows >= top) & (rows < top + tall) & (columns >= left) & (columns < left + wide)
        if ellipses:
            inside = ((rows - top - tall / 2) / (tall / 2)) ** 2 + ((columns - left - wide / 2) / (wide / 2)) ** 2 < 1
            shape = torch.where(torch.rand(count, 1, 1, 1, generator=generator) < 0.5, inside, shape)
        x = x * (1 - shape.float()) + colour * shape.float()
    return x


def build_tiny_router_base(path: str | Path, seed: int = 0, fit_steps: int = 150, denoiser_steps: int = 0) -> Path:
    """``build_tiny_sdxl_base`` with a VAE whose latents carry the picture, as SDXL's do: what the
    router learns to segment from. A random VAE's do not (measured on router scenes at 64x96: a
    linear read-out of the 8x8 cells' colours from its latent explains 2 % of their variance; its
    posterior std 1.1 is 3.6x the spread of its means, so ``latent_dist.sample()`` is mostly noise;
    and SDXL's scaling factor 0.13025 leaves latents of std 0.04, drowned at t=200 by noise of
    std 0.5), so a tiny router stayed at all-background. Here the encoder is fitted (``fit_steps``
    of Adam on seeded pictures of colour boxes, a few seconds) to put each 8x8 cell's mean colour
    and contrast in the 4 latent channels with a posterior std of ~0.02 (the read-out then explains
    80 %), and ``scaling_factor`` is set to 1 / the std of its latents, SD's rule. The decoder
    stays random (nothing the router does decodes).

    ``denoiser_steps`` > 0 then trains the UNet as SDXL's was trained, a denoiser (epsilon on DDPM's
    forward process, empty text), on pictures of boxes and ellipses at 192x128: a random UNet's
    cross-attention inputs tell figure from ground poorly, which caps a router on them (measured
    on the router test's scenes, a linear read-out of figure vs ground reaches IoU 0.55-0.63 from
    a random UNet's, 0.66-0.68 after 600 steps of this). About 0.5 s a step on 2 CPU cores."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL

    path = build_tiny_sdxl_base(path, seed)
    vae = AutoencoderKL.from_pretrained(path / "vae")
    generator = torch.Generator().manual_seed(seed)

    def cells(x):  # per 8x8 cell: mean RGB and luminance contrast, about in [-1, 1]
        luminance = x.mean(1, keepdim=True)
        contrast = (F.avg_pool2d(luminance ** 2, 8) - F.avg_pool2d(luminance, 8) ** 2).clamp(min=0).sqrt()
        return torch.cat([F.avg_pool2d(x, 8), contrast * 4 - 1], 1)

    trained = [*vae.encoder.parameters(), *vae.quant_conv.parameters()]
    optimizer = torch.optim.Adam(trained, lr=3e-3)
    for _ in range(fit_steps):
        x = colour_shapes(8, 48, 32, generator)
        posterior = vae.encode(x).latent_dist
        loss = F.mse_loss(posterior.mean, cells(x)) + 0.01 * F.mse_loss(posterior.logvar,
                                                                         torch.full_like(posterior.logvar, -8.0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        std = vae.encode(colour_shapes(32, 48, 32, generator)).latent_dist.mean.std()
    vae.register_to_config(scaling_factor=round(1 / float(std), 4))
    vae.save_pretrained(path / "vae")
    if denoiser_steps:
        fit_denoiser(path, vae, denoiser_steps, generator)
    return path


def fit_denoiser(path: Path, vae, steps: int, generator, batch: int = 16,
                 size_hw: tuple[int, int] = (192, 128)) -> None:
    """Train ``path``/unet for ``steps`` of AdamW as an epsilon denoiser of ``vae``'s latents of
    ``colour_shapes`` (ellipses too), with the empty text SDXL's UNet sees under classifier-free
    dropout, and save it in place."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from train.models.router.model import time_ids

    unet = UNet2DConditionModel.from_pretrained(path / "unet")
    schedule = DDPMScheduler.from_pretrained(path / "scheduler")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    text_width = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    added = {"text_embeds": torch.zeros(batch, text_width), "time_ids": time_ids(size_hw, batch, "cpu")}
    context = torch.zeros(batch, 77, unet.config.cross_attention_dim)
    unet.train()
    for _ in range(steps):
        with torch.no_grad():
            latents = vae.encode(colour_shapes(batch, *size_hw, generator, ellipses=True)).latent_dist.mode()
            latents = latents * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, schedule.config.num_train_timesteps, (batch,), generator=generator)
        prediction = unet(schedule.add_noise(latents, noise, t), t, context, added_cond_kwargs=added).sample
        loss = F.mse_loss(prediction, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    unet.save_pretrained(path / "unet")
