"""Putting the IP-Adapter on an SDXL UNet, saving it, loading it back, and checking that it fits.

The adapter is installed with diffusers' own loader code (``unet._load_ip_adapter_weights``, what
``load_ip_adapter`` calls) from a state in the original key names, so training runs the very
modules a stock pipeline builds when it loads the saved file: ``IPAdapterFullImageProjection`` in
``unet.encoder_hid_proj`` and ``IPAdapterAttnProcessor2_0`` (scale 1.0) in every attn2. A new
adapter's projection comes from torch's current seed; its to_k_ip/to_v_ip start as copies of the
layer's to_k/to_v (the reference training scripts' initialisation)."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from train.models.personalizer.layout import (ADAPTER_FILE, FORMAT, IDENTITY_FILE, MODEL_NAME, check_fits,
                                              tensor_shapes, weights_hash)

# diffusers' names in IPAdapterFullImageProjection -> the original checkpoint's (load_ip_adapter maps them back)
_PROJECTION_NAMES = (("ff.net.0.proj", "proj.0"), ("ff.net.2", "proj.2"), ("norm", "proj.3"))


def cross_attention_layers(unet) -> list[str]:
    """The processor names of the cross-attention layers (attn2), in the order load_ip_adapter numbers them."""
    return [name for name in unet.attn_processors if not name.endswith("attn1.processor")]


def layer_shapes(unet) -> list[tuple[str, list[int]]]:
    return [(name, list(unet.get_submodule(name.removesuffix(".processor")).to_k.weight.shape))
            for name in cross_attention_layers(unet)]


def check_adapter_file(file: str | Path, unet_config: dict, clip_width: int, where: str) -> None:
    """AdapterError (before any work) unless the adapter in ``file`` fits a UNet of ``unet_config``
    (built on the meta device: shapes only) and an image encoder of hidden size ``clip_width``."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
    check_fits(tensor_shapes(file), layer_shapes(unet), unet.config.cross_attention_dim, clip_width, where)


def new_adapter(unet, clip_width: int) -> dict:
    """A fresh adapter state in the original key names: {"image_proj": ..., "ip_adapter": ...}."""
    from diffusers.models.embeddings import IPAdapterFullImageProjection

    projection = IPAdapterFullImageProjection(image_embed_dim=clip_width, cross_attention_dim=unet.config.cross_attention_dim)
    ip_adapter = {}
    for i, name in enumerate(cross_attention_layers(unet)):
        attn = unet.get_submodule(name.removesuffix(".processor"))
        ip_adapter[f"{2 * i + 1}.to_k_ip.weight"] = attn.to_k.weight.detach().clone()
        ip_adapter[f"{2 * i + 1}.to_v_ip.weight"] = attn.to_v.weight.detach().clone()
    return {"image_proj": _original_names(projection.state_dict()), "ip_adapter": ip_adapter}


def _original_names(state: dict) -> dict:
    renamed = {}
    for key, value in state.items():
        for ours, original in _PROJECTION_NAMES:
            if key.startswith(ours + "."):
                key = original + key[len(ours):]
        renamed[key] = value.detach().clone()
    return renamed


def read_adapter(file: str | Path) -> dict:
    """The state in ``file`` (one safetensors, keys prefixed image_proj. / ip_adapter.)."""
    from safetensors.torch import load_file

    flat, state = load_file(str(file)), {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        part, _, rest = key.partition(".")
        state[part][rest] = value
    return state


@contextlib.contextmanager
def loader_warning_silenced():
    """diffusers' IP-Adapter loader casts the UNet to its own dtype and so warns that "modules ...
    should be kept in float32: []" (an empty list: nothing to keep); hide that one logger meanwhile."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def install(unet, state: dict) -> list:
    """Load ``state`` into ``unet`` as load_ip_adapter does; freeze the UNet and return the adapter's
    parameters (projection, then to_k_ip/to_v_ip per layer), the only ones that train."""
    with loader_warning_silenced():
        unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)
    unet.requires_grad_(False)
    modules = [unet.encoder_hid_proj] + [unet.attn_processors[name] for name in cross_attention_layers(unet)]
    for module in modules:
        module.requires_grad_(True)
    return [p for module in modules for p in module.parameters()]


def adapter_state(unet) -> dict:
    """The installed adapter's weights as one flat dict in the original names (what load_ip_adapter reads)."""
    (projection,) = unet.encoder_hid_proj.image_projection_layers
    flat = {f"image_proj.{k}": v for k, v in _original_names(projection.state_dict()).items()}
    for i, name in enumerate(cross_attention_layers(unet)):
        processor = unet.attn_processors[name]
        flat[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = processor.to_k_ip[0].weight.detach().clone()
        flat[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = processor.to_v_ip[0].weight.detach().clone()
    return flat


def save_adapter(folder: str | Path, unet, identity: dict, image_encoder=None) -> dict:
    """Write the adapter of ``unet`` (unwrapped from DDP), ``image_encoder`` beside it when given
    (load_ip_adapter's ``image_encoder/``) and the identity; returns the full identity."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = adapter_state(unet)
    save_file({k: v.contiguous().cpu() for k, v in flat.items()}, str(folder / ADAPTER_FILE))
    if image_encoder is not None:
        image_encoder.save_pretrained(folder / "image_encoder")
    (projection,) = unet.encoder_hid_proj.image_projection_layers
    full = {"model": MODEL_NAME, "format": FORMAT, **identity, "weight_name": ADAPTER_FILE,
            "clip_width": projection.ff.net[0].proj.in_features, "context_width": unet.config.cross_attention_dim,
            "weights_sha256": weights_hash(folder / ADAPTER_FILE)}
    (folder / IDENTITY_FILE).write_text(json.dumps(full, indent=1))
    return full
