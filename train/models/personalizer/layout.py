"""The personalizer's saved layout and the checks made on it before any work; no torch.

An adapter folder is what diffusers' ``load_ip_adapter(folder, subfolder="", weight_name=ADAPTER_FILE)``
reads, plus the identity::

    ip-adapter.safetensors  the "full" IP-Adapter in the original (tencent-ailab) key names:
                            image_proj.proj.{0,2,3}.*  (IPAdapterFullImageProjection: MLP + LayerNorm,
                            the encoder's penultimate tokens -> as many tokens at the UNet's context width)
                            ip_adapter.{1,3,5...}.to_{k,v}_ip.weight  (one pair per attn2, in
                            ``unet.attn_processors`` order)
    image_encoder/          (OUT/final only) the CLIP vision tower the adapter was trained on, where
                            load_ip_adapter looks for it; checkpoints name it in the identity instead
    personalizer.json       identity: model, format, base, image encoder (+ subfolder), num_tokens,
                            resolution, buckets, the weights' sha256, step
    training_state.pt       (training checkpoints only) optimizer, scaler, EMA, loader state, step"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from train.models.identity import read_identity_file

MODEL_NAME = "pairforge-personalizer"
FORMAT = 1
IDENTITY_FILE = "personalizer.json"
ADAPTER_FILE = "ip-adapter.safetensors"


class AdapterError(ValueError):
    """An adapter folder this code cannot use, or an adapter that does not fit the base; the message says what to change."""


def read_identity(path: str | Path) -> dict:
    """The identity of the adapter folder at ``path``; AdapterError naming what it is instead."""
    folder = Path(path)
    identity = read_identity_file(folder, "--adapter", "a Stage II adapter", IDENTITY_FILE, MODEL_NAME, FORMAT,
                                  "`pairforge train stage2` (OUT/final or OUT/checkpoints/step-NNNNNN)", AdapterError)
    if not (folder / ADAPTER_FILE).is_file():
        raise AdapterError(f"--adapter {folder} is incomplete: no {ADAPTER_FILE}")
    return identity


def tensor_shapes(file: str | Path) -> dict[str, list[int]]:
    """Every tensor's shape in a safetensors file, from its JSON header (no weights read)."""
    with open(file, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {key: value["shape"] for key, value in header.items() if key != "__metadata__"}


def weights_hash(file: str | Path) -> str:
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16]


def check_fits(shapes: dict[str, list[int]], layers: list[tuple[str, list[int]]], context_width: int,
               clip_width: int, where: str) -> None:
    """AdapterError unless the adapter tensors ``shapes`` (original key names) fit a UNet whose
    cross-attention layers are ``layers`` ((name, to_k weight shape) in ``attn_processors`` order)
    and context width ``context_width``, fed by an image encoder of hidden size ``clip_width``."""
    proj = {k.removeprefix("image_proj."): v for k, v in shapes.items() if k.startswith("image_proj.")}
    if "proj.3.weight" not in proj:
        raise AdapterError(f"{where}: not a full IP-Adapter (no image_proj.proj.3, the LayerNorm of the 257-token "
                           f"MLP projection); Stage II trains and loads that variant only")
    if proj["proj.0.weight"][1] != clip_width:
        raise AdapterError(f"{where}: its projection takes {proj['proj.0.weight'][1]}-wide image tokens but the image "
                           f"encoder's hidden size is {clip_width}: set image_encoder= (and image_encoder_subfolder=) "
                           f"to the encoder it was trained with (ViT-H/14: 1280)")
    if proj["proj.3.weight"][0] != context_width:
        raise AdapterError(f"{where}: it makes {proj['proj.3.weight'][0]}-wide tokens but the base UNet's "
                           f"cross-attention width is {context_width} (SDXL's: 2048): set base= to the model it was "
                           f"trained on")
    ip = {k.removeprefix("ip_adapter."): v for k, v in shapes.items() if k.startswith("ip_adapter.")}
    if len(ip) != 2 * len(layers):
        raise AdapterError(f"{where}: {len(ip) // 2} adapted cross-attention layers, the base UNet has {len(layers)}: "
                           f"set base= to the model it was trained on")
    for i, (name, shape) in enumerate(layers):
        for kind in ("to_k_ip", "to_v_ip"):
            got = ip.get(f"{2 * i + 1}.{kind}.weight")
            if got != list(shape):
                raise AdapterError(f"{where}: {kind} of layer {2 * i + 1} is {got}, the base's {name} needs {list(shape)}: "
                                   f"set base= to the model it was trained on")
