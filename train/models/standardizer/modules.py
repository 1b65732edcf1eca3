"""The standardizer's modules. torch and diffusers load on first use (the layering rule): the
classes are made by ``classes()`` and reachable as module attributes (``modules.Standardizer``).

Reference attention runs through attention processors on every ``attn1`` (self-attention; attn2
is the cross-attention) of both UNets, sharing one ``ReferenceBank`` keyed by processor name:
the ReferenceNet's processor adds FBDM and RPIM to its input features, stores them under its name
and attends as usual; the denoising UNet's processor of the same name attends over its own tokens
and the stored ones. A dict overwritten per name (not a list appended to) is what keeps this right
under gradient checkpointing, which re-runs the forward of each block during backward; the bank is
cleared at the start of each forward, never after it, because backward still reads it. Both
processors call PyTorch's fused ``scaled_dot_product_attention`` (diffusers' AttnProcessor2_0)."""
from __future__ import annotations

import functools
import math
from types import SimpleNamespace


def parameter_key(processor_name: str) -> str:
    """``down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor`` -> a ParameterDict key."""
    return processor_name.removesuffix(".processor").replace(".", "_")


def self_attention_names(unet) -> list[str]:
    return [name for name in unet.attn_processors if name.endswith("attn1.processor")]


def grid_of(tokens: int, height: int, width: int) -> tuple[int, int]:
    """The (h, w) of a feature map of ``tokens`` tokens in a UNet whose latent is height x width."""
    for level in range(8):
        h, w = math.ceil(height / 2 ** level), math.ceil(width / 2 ** level)
        if h * w == tokens:
            return h, w
    raise ValueError(f"{tokens} tokens match no level of a {height}x{width} latent")


class ReferenceBank:
    """What one forward pass shares between the two UNets: the ReferenceNet's self-attention inputs
    by processor name, the latent size, and the source's background mask and pose features."""

    def __init__(self):
        self.features: dict = {}
        self.latent_hw: tuple[int, int] | None = None
        self.bg_mask = None        # B x 1 x H x W, 1 = background (FBDM)
        self.pose_features = None  # B x C x h x w, RPIM's light network output at latent resolution
        self.target_pose = None    # B x C0 x h x w, the pose guider's output, added after conv_in

    def reset(self, latent_hw, bg_mask=None, pose_features=None, target_pose=None) -> None:
        self.features.clear()
        self.latent_hw, self.bg_mask, self.pose_features, self.target_pose = latent_hw, bg_mask, pose_features, target_pose


class ReferenceWriter:
    """attn1 of the ReferenceNet: f~r = fr + FBDM + RPIM, stored for the denoising UNet, then attended."""

    def __init__(self, name: str, bank: ReferenceBank, adapter):
        from diffusers.models.attention_processor import AttnProcessor2_0
        self.name, self.bank, self.adapter, self.attend = name, bank, adapter, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if self.adapter is not None:
            hidden_states = self.adapter.condition(self.name, hidden_states, self.bank)
        self.bank.features[self.name] = hidden_states
        return self.attend(attn, hidden_states, None, attention_mask, temb)


class ReferenceReader:
    """attn1 of the denoising UNet: keys and values over its own tokens and the ReferenceNet's."""

    def __init__(self, name: str, bank: ReferenceBank):
        from diffusers.models.attention_processor import AttnProcessor2_0
        self.name, self.bank, self.attend = name, bank, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        import torch
        reference = self.bank.features[self.name].to(hidden_states.dtype)
        context = torch.cat([hidden_states, reference], dim=1)
        return self.attend(attn, hidden_states, context, attention_mask, temb)


@functools.cache
def classes() -> SimpleNamespace:
    import torch
    import torch.nn.functional as F
    from diffusers import ModelMixin
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
    from torch import nn

    class PoseGuider(ModelMixin, ConfigMixin):
        """Animate Anyone's pose guider: the target pose image -> features at latent resolution
        (3x3 convs, stride 2 three times, SiLU; last conv zero-initialised), added to the denoising
        UNet's conv_in output."""

        @register_to_config
        def __init__(self, embedding_channels: int = 320, pose_channels: int = 3,
                     block_out_channels: tuple = (16, 32, 64, 128)):
            super().__init__()
            self.embedding = ControlNetConditioningEmbedding(embedding_channels, pose_channels, tuple(block_out_channels))

        def forward(self, pose):
            return self.embedding(pose)

    class ReferenceAdapter(ModelMixin, ConfigMixin):
        """FBDM and RPIM for every ReferenceNet self-attention (``layers``: processor name -> channels).
        FBDM: tokens v_f, v_b per layer, f~r = (fr + v_b) m' + (fr + v_f)(1 - m') with m' the background
        mask resized to the layer (zero-initialised: training starts from the baseline model).
        RPIM (supplement §6): a light conv net (16, 32, 96, 256, 320 channels, SiLU, x8 down) on the
        source pose image, then per layer a conv to its channels (zero-initialised) interpolated to
        its resolution and added."""

        @register_to_config
        def __init__(self, layers: dict | None = None, fbdm: bool = True, rpim: bool = True, pose_channels: int = 3,
                     rpim_block_out_channels: tuple = (16, 32, 96, 256), rpim_channels: int = 320):
            super().__init__()
            layers = dict(sorted((layers or {}).items()))  # the config is saved with sorted keys: one order
            self.fbdm_tokens = nn.ParameterDict({parameter_key(n): nn.Parameter(torch.zeros(2, c)) for n, c in layers.items()}) \
                if fbdm else None
            self.rpim_encoder = self.rpim_projections = None
            if rpim:
                self.rpim_encoder = ControlNetConditioningEmbedding(rpim_channels, pose_channels,
                                                                    tuple(rpim_block_out_channels))
                nn.init.kaiming_uniform_(self.rpim_encoder.conv_out.weight, a=math.sqrt(5))  # diffusers zeroes it:
                nn.init.zeros_(self.rpim_encoder.conv_out.bias)  # with zeroed projections too, no gradient would flow
                self.rpim_projections = nn.ModuleDict({parameter_key(n): nn.Conv2d(rpim_channels, c, 1)
                                                       for n, c in layers.items()})
                for projection in self.rpim_projections.values():
                    nn.init.zeros_(projection.weight)
                    nn.init.zeros_(projection.bias)

        def encode_pose(self, pose):
            return self.rpim_encoder(pose) if self.rpim_encoder is not None else None

        def condition(self, name: str, hidden_states, bank: ReferenceBank):
            key = parameter_key(name)
            h, w = grid_of(hidden_states.shape[1], *bank.latent_hw)
            if self.fbdm_tokens is not None and bank.bg_mask is not None:
                mask = F.interpolate(bank.bg_mask.to(hidden_states.dtype), (h, w), mode="area")
                mask = mask.flatten(2).transpose(1, 2)                     # B x N x 1
                tokens = self.fbdm_tokens[key].to(hidden_states.dtype)           # [v_f, v_b]
                hidden_states = hidden_states + tokens[1] * mask + tokens[0] * (1 - mask)
            if self.rpim_projections is not None and bank.pose_features is not None:
                pose = self.rpim_projections[key](bank.pose_features)
                if pose.shape[-2:] != (h, w):
                    pose = F.interpolate(pose, (h, w), mode="bilinear", align_corners=False)
                hidden_states = hidden_states + pose.flatten(2).transpose(1, 2).to(hidden_states.dtype)
            return hidden_states

    class Standardizer(nn.Module):
        """The trainable standardizer: ReferenceNet, denoising UNet, pose guider, FBDM/RPIM adapter
        (None when both are off). ``forward`` predicts the noise of the target's noisy latents."""

        def __init__(self, reference_unet, denoising_unet, pose_guider, adapter=None):
            super().__init__()
            self.reference_unet, self.denoising_unet = reference_unet, denoising_unet
            self.pose_guider, self.reference_adapter = pose_guider, adapter
            self.bank = ReferenceBank()
            reference_processors = dict(reference_unet.attn_processors)
            denoising_processors = dict(denoising_unet.attn_processors)
            for name in self_attention_names(reference_unet):
                reference_processors[name] = ReferenceWriter(name, self.bank, adapter)
                denoising_processors[name] = ReferenceReader(name, self.bank)
            reference_unet.set_attn_processor(reference_processors)
            denoising_unet.set_attn_processor(denoising_processors)
            denoising_unet.conv_in.register_forward_hook(self._add_target_pose)

        def _add_target_pose(self, module, inputs, output):
            return output if self.bank.target_pose is None else output + self.bank.target_pose.to(output.dtype)

        def forward(self, noisy_latents, timesteps, reference_latents, image_embeds, target_pose, bg_mask=None,
                    source_pose=None):
            """Noise prediction. ``target_pose``/``source_pose``: pose images at pixel size (B x 3 x 8h x 8w,
            [-1, 1]); ``bg_mask``: B x 1 x 8h x 8w, 1 = background; ``image_embeds``: B x 1 x D (CLIP)."""
            adapter = self.reference_adapter
            pose_features = adapter.encode_pose(source_pose) if adapter is not None and source_pose is not None else None
            self.bank.reset(tuple(noisy_latents.shape[-2:]), bg_mask, pose_features)
            zero_time = torch.zeros_like(timesteps)  # the ReferenceNet sees the clean source latent
            self.reference_unet(reference_latents, zero_time, encoder_hidden_states=image_embeds, return_dict=False)
            self.bank.target_pose = self.pose_guider(target_pose)
            return self.denoising_unet(noisy_latents, timesteps, encoder_hidden_states=image_embeds,
                                       return_dict=False)[0]

        def enable_gradient_checkpointing(self) -> None:
            self.reference_unet.enable_gradient_checkpointing()
            self.denoising_unet.enable_gradient_checkpointing()

        def freeze_unused(self, image_embed_dim: int) -> list[str]:
            """Freeze the ReferenceNet parameters that no loss reaches (those after its last
            self-attention: the output of the ReferenceNet is never used), found by one small probe
            backward; returns their names. So DDP runs with find_unused_parameters=False (no graph
            walk each step) and the optimizer holds no state for them."""
            multiple = 2 ** (len(self.denoising_unet.config.down_block_types) - 1)
            device = next(self.parameters()).device
            latent = torch.randn(1, self.denoising_unet.config.in_channels, multiple, multiple, device=device)
            pixels = torch.zeros(1, 3, 8 * multiple, 8 * multiple, device=device)
            mask = torch.zeros(1, 1, 8 * multiple, 8 * multiple, device=device)
            embeds = torch.randn(1, 1, image_embed_dim, device=device)
            self.zero_grad(set_to_none=True)
            out = self(latent, torch.tensor([1], device=device), latent, embeds, pixels, mask, pixels)
            out.float().square().mean().backward()
            unused = [n for n, p in self.reference_unet.named_parameters() if p.requires_grad and p.grad is None]
            for name, parameter in self.reference_unet.named_parameters():
                if name in unused:
                    parameter.requires_grad_(False)
            self.zero_grad(set_to_none=True)
            return ["reference_unet." + n for n in unused]

    made = SimpleNamespace(PoseGuider=PoseGuider, ReferenceAdapter=ReferenceAdapter, Standardizer=Standardizer)
    for name, cls in vars(made).items():
        cls.__module__, cls.__qualname__ = __name__, name
    return made


def __getattr__(name: str):  # ``modules.Standardizer`` etc. import torch only when asked for
    if name in ("PoseGuider", "ReferenceAdapter", "Standardizer"):
        return getattr(classes(), name)
    raise AttributeError(name)
