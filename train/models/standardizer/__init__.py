"""The Stage I standardizer (SerialGen §3.3): an Animate-Anyone-style ReferenceNet + denoising UNet
(diffusers ``UNet2DConditionModel``, no temporal layers) joined by reference attention, with the
Foreground-Background Distinction Module (FBDM) and the Reference Pose Injection Module (RPIM) in
the ReferenceNet's self-attentions, a pose guider for the target pose and the CLIP image embedding
of the source as cross-attention condition.

    from train.models.standardizer import load_base, load_checkpoint, save_checkpoint
    model, frozen = load_base("stable-diffusion-v1-5/stable-diffusion-v1-5", "openai/clip-vit-large-patch14")
    noise_pred = model(noisy_latents, timesteps, reference_latents, image_embeds, target_pose, bg_mask, source_pose)

The module classes (``modules.Standardizer``, ``PoseGuider``, ``ReferenceAdapter``) are made on first
use: importing this package loads neither torch nor diffusers."""
from train.models.standardizer.layout import CheckpointError, read_identity, required_multiple
from train.models.standardizer.model import FrozenParts, clip_image_embeds, load_base, load_checkpoint, save_checkpoint

__all__ = ["CheckpointError", "FrozenParts", "clip_image_embeds", "load_base", "load_checkpoint", "read_identity",
           "required_multiple", "save_checkpoint"]
