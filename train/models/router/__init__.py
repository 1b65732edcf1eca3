"""AnyStory's decoupled instance-aware subject router (§3.3) on an SDXL-family UNet: routing
features from CLIP + a one-query QFormer per segmented subject (and one for the background, from a
black image), a coarse map, a masked cross-attention refinement and refined maps M_i in every
cross-attention layer, which restrict the subject's CLIP tokens (decoupled cross-attention) and its
ReferenceNet tokens (reference attention biased by the previous layer's maps).

    from train.models.router import load_base, load_checkpoint, save_checkpoint
    model, frozen = load_base("stabilityai/stable-diffusion-xl-base-1.0", "h94/IP-Adapter:sdxl_models/image_encoder")
    noise_pred = model(noisy, t, text_states, added_cond, subject_tokens, background_tokens, subject_valid)
    maps = model.maps()   # per cross-attention layer: B x (S+1) x hw

The module classes are made on first use (``modules.classes()``): importing this package loads
neither torch nor diffusers."""
from train.models.router.layout import CheckpointError, read_identity
from train.models.router.model import (Conditioning, FrozenParts, clip_tokens, encode_text, load_base, load_checkpoint,
                                       load_frozen_parts, routing_loss, save_checkpoint)

__all__ = ["CheckpointError", "Conditioning", "FrozenParts", "clip_tokens", "encode_text", "load_base", "load_checkpoint",
           "load_frozen_parts", "read_identity", "routing_loss", "save_checkpoint"]
