"""Stage II's personalizer (SerialGen §4.1): the "full" IP-Adapter on SDXL. OpenCLIP ViT-H/14's
penultimate tokens of the standardized reference (257: 256 patches + CLS) -> an MLP + LayerNorm
(diffusers' ``IPAdapterFullImageProjection``) -> 257 tokens at the UNet's context width, attended
by decoupled cross-attention (``IPAdapterAttnProcessor2_0`` in every attn2, scale 1.0). Only the
projection and the to_k_ip/to_v_ip weights train; the saved folder loads into a stock
``StableDiffusionXLPipeline`` with ``load_ip_adapter(folder, subfolder="", weight_name=ADAPTER_FILE)``.

    from train.models.personalizer import install, new_adapter, save_adapter
    parameters = install(unet, new_adapter(unet, image_encoder.config.hidden_size))
    noise = unet(noisy, t, text, added_cond_kwargs={..., "image_embeds": [tokens[:, None]]}).sample

Importing this package loads neither torch nor diffusers."""
from train.models.personalizer.layout import ADAPTER_FILE, IDENTITY_FILE, AdapterError, read_identity
from train.models.personalizer.model import (adapter_state, check_adapter_file, install, new_adapter, read_adapter,
                                             save_adapter)

__all__ = ["ADAPTER_FILE", "IDENTITY_FILE", "AdapterError", "adapter_state", "check_adapter_file", "install",
           "new_adapter", "read_adapter", "read_identity", "save_adapter"]
