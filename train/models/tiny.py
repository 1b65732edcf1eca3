"""A tiny SD-1.5-shaped base (UNet 32/64 channels, an f=8 VAE, the SD noise schedule) and a tiny
CLIP vision encoder with projection, built from configs and saved with ``save_pretrained`` in the
layout ``load_base`` reads: for tests, the demo and ``pairforge bench train``; beside it a tiny
SDXL-shaped base (``build_tiny_sdxl_base``, the router's). Random weights; the shapes and code
paths are SD-1.5's and SDXL's."""
from __future__ import annotations

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
