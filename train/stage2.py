"""Stage II training (SerialGen §4.1): the IP-Adapter personalizer (train/models/personalizer) on
SDXL over ``real_pair`` shards (standardized reference, photo, caption), in one readable loop. One
process, or one rank of a DDP job (``pairforge train stage2 --workers N`` runs it under Ray Train;
any launcher that initialises torch.distributed works the same).

Per step: the loader's batch (train.data; each rank reads its own samples) -> the photo's latent
(VAE, sampled), the caption's SDXL text conditioning, the reference's ViT-H/14 penultimate tokens,
SDXL's size and crop conditioning (original size = the photo's, crop origin = where the centre crop
of the resized photo starts, target size = the training size) -> for classifier-free guidance, as
the IP-Adapter reference scripts do: 5 % of samples lose the text (caption ""), 5 % the image (the
tokens of an all-zero image, what pipelines feed as the unconditional image), 5 % both -> noise at
a random timestep (DDPM's forward process on the base's schedule) -> the noise prediction of the
UNet with the adapter -> epsilon MSE -> AdamW on the adapter only (projection + to_k_ip/to_v_ip),
optional EMA.

Aspect buckets: every photo is resized to cover and centre-cropped to the (width, height) among
``resolution`` and ``buckets`` nearest its aspect ratio (in log ratio). A batch is collated per
bucket (``collate_buckets``): each group goes through the UNet on its own, and the batch's loss is
the sample-weighted mean, accumulated over the groups' backward passes (under DDP all but the last
without gradient sync), so mixed-shape batches train exactly as one would.

Exact resume: a checkpoint (OUT/checkpoints/step-NNNNNN) is an adapter folder plus the optimizer,
the gradient scaler, the EMA and the loader's state; the step's draws (drops, VAE sample, noise,
timesteps) come from one generator seeded by (seed, rank, step). Rank 0 writes checkpoints,
TensorBoard logs (OUT/logs), and every ``validate_every`` steps a grid of held-out (split=test)
pairs OUT/samples/step-NNNNNN.png (reference | generated | target). OUT/final is the adapter
folder a stock SDXL pipeline loads with ``load_ip_adapter`` (image encoder included)."""
from __future__ import annotations

import logging
import math
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shards.keys import sample_seed
from train.data import ShardSet, ShardStream, to_model
from train.data.kinds import Decoder, place
from train.loop import (apply_gradients, check_loop_settings, check_sdxl_unet, distributed_optimizer, ema_weights,
                        kind_dataset, latest_checkpoint, resumed_loader, run_steps, training_device, training_state,
                        write_checkpoint)

log = logging.getLogger(__name__)
KIND = "real_pair"


@dataclass(frozen=True)
class Stage2Config:
    base: str = "stabilityai/stable-diffusion-xl-base-1.0"  # SDXL family: hub id or folder (pipeline layout)
    image_encoder: str = "h94/IP-Adapter"                    # CLIP vision with projection: hub id or folder
    image_encoder_subfolder: str = "models/image_encoder"    # OpenCLIP ViT-H/14, the paper's reference encoder
    revision: str = ""
    adapter: str = ""                     # start from this adapter folder's weights ("": a new adapter)
    resolution: tuple[int, int] = (512, 768)  # (width, height), the paper's
    buckets: tuple[tuple[int, int], ...] = ()  # more (width, height) sizes for other aspect ratios
    batch_size: int = 8                   # per worker (paper: 8 per GPU x 8 A100)
    steps: int = 200_000
    learning_rate: float = 1e-4           # the IP-Adapter scripts'
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    text_drop: float = 0.05               # caption "" alone
    image_drop: float = 0.05              # reference image zeroed alone
    both_drop: float = 0.05               # both
    mixed_precision: str = "bf16"         # on GPU (no | fp16 | bf16); CPU trains in float32
    gradient_checkpointing: bool = True
    ema_decay: float = 0.0                # 0: no EMA
    seed: int = 0
    num_workers: int = 4
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    validate_every: int = 1000            # 0: only at the end
    validation_samples: int = 8
    inference_steps: int = 20             # DDIM, the paper's
    guidance_scale: float = 5.0
    log_every: int = 10

    def check(self) -> None:
        if any(v <= 0 or v % 8 for size in (self.resolution, *self.buckets) for v in size):
            raise ValueError(f"resolution {list(self.resolution)} and buckets {[list(b) for b in self.buckets]}: sides "
                             f"must be positive multiples of 8 (the VAE's factor), e.g. [512, 768]")
        check_loop_settings(self)
        drops = (self.text_drop, self.image_drop, self.both_drop)
        if min(drops) < 0 or sum(drops) >= 1 or not 0 <= self.ema_decay < 1:
            raise ValueError("text_drop, image_drop and both_drop must be >= 0 with a sum below 1 (the reference "
                             "scripts': 0.05 each); ema_decay in [0, 1)")


def dataset(data, split: str | None = None) -> ShardSet:
    """The real_pair shards (of one split); DatasetKindError (before any work) for other records."""
    return kind_dataset(data, (KIND,), split, "train stage2", "`pairforge pairs`")


def check_base(config: Stage2Config) -> None:
    """Before any work: an SDXL-family UNet, every training size a whole number of latents at each
    level, a CLIP vision encoder, and (``adapter=``) an adapter that fits this UNet and that encoder."""
    from transformers import CLIPVisionConfig

    from train.models.personalizer import ADAPTER_FILE, check_adapter_file, read_identity
    from train.models.standardizer.layout import check_resolution

    unet_config = check_sdxl_unet(config.base, config.revision, "Stage II")
    for size in (config.resolution, *config.buckets):
        check_resolution(size, unet_config)
    try:
        clip_width = CLIPVisionConfig.from_pretrained(config.image_encoder,
                                                      subfolder=config.image_encoder_subfolder).hidden_size
    except OSError as error:
        raise ValueError(f"image_encoder {config.image_encoder!r} (subfolder {config.image_encoder_subfolder!r}) "
                         f"is not a CLIP vision model: give a hub id or a folder holding its config.json "
                         f"(default h94/IP-Adapter, models/image_encoder) ({error})") from None
    if config.adapter:
        read_identity(config.adapter)
        check_adapter_file(Path(config.adapter) / ADAPTER_FILE, unet_config, clip_width, f"adapter {config.adapter}")


def nearest_bucket(size: tuple[int, int], buckets) -> tuple[int, int]:
    """The (width, height) among ``buckets`` whose aspect ratio is nearest ``size``'s (in log ratio)."""
    aspect = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


def cover_crop(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` resized (bicubic) to cover ``size`` = (w, h) and centre-cropped to it; with the crop's
    (top, left) in the resized image, SDXL's crop_coords_top_left."""
    (w, h), (tw, th) = image.shape[1::-1], size
    scale = max(tw / w, th / h)
    nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BICUBIC)) if (nw, nh) != (w, h) else image
    top, left = (nh - th) // 2, (nw - tw) // 2
    return np.ascontiguousarray(resized[top:top + th, left:left + tw]), (top, left)


class BucketDecoder(Decoder):
    """real_pair -> target (the photo cropped to its bucket), ref (the reference fitted on white into
    the image encoder's square, so its resize keeps the whole figure), caption, and SDXL's time_ids
    (original h, w, crop top, left, target h, w)."""

    def __init__(self, kind: str, size: tuple[int, int], buckets=(), ref_size: tuple[int, int] = (224, 224),
                 normalize: bool = True):
        super().__init__(kind, size, 255, normalize)
        self.buckets = [tuple(size), *(tuple(b) for b in buckets)]
        self.ref_size = tuple(ref_size)

    def __call__(self, record: dict, epoch: int = 0) -> dict:
        photo = record["target.jpg"]
        h, w = photo.shape[:2]
        bw, bh = nearest_bucket((w, h), self.buckets)
        target, (top, left) = cover_crop(photo, (bw, bh))
        return {"__key__": record["__key__"], "ref": self.fitted(record["ref.png"], self.ref_size),
                "target": self.image(target), "caption": record["txt"],
                "time_ids": np.array([h, w, top, left, bh, bw], np.float32)}


def collate_buckets(samples: list[dict]) -> dict:
    """A DataLoader batch of samples of several buckets: {"__key__": every key in order, "groups":
    one collated batch per target size, in order of first appearance}."""
    from torch.utils.data import default_collate

    groups: dict[tuple, list] = {}
    for sample in samples:
        groups.setdefault(tuple(sample["target"].shape), []).append(sample)
    return {"__key__": [s["__key__"] for s in samples], "groups": [default_collate(g) for g in groups.values()]}


def blank_tokens(image_encoder, device):
    """The tokens of an all-zero (normalised) image: a dropped reference, as pipelines encode the unconditional one."""
    import torch

    size = image_encoder.config.image_size
    pixels = torch.zeros(1, 3, size, size, device=device, dtype=next(image_encoder.parameters()).dtype)
    return image_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]


def identity_of(config: Stage2Config, image_encoder_config) -> dict:
    return {"base": config.base, "revision": config.revision, "image_encoder": config.image_encoder,
            "image_encoder_subfolder": config.image_encoder_subfolder,
            "num_tokens": (image_encoder_config.image_size // image_encoder_config.patch_size) ** 2 + 1,
            "resolution": list(config.resolution), "buckets": [list(b) for b in config.buckets]}


def make_decoder(config: Stage2Config, image_encoder, normalize: bool = False) -> BucketDecoder:
    size = image_encoder.config.image_size
    return BucketDecoder(KIND, tuple(config.resolution), config.buckets, (size, size), normalize)


class Trainer:
    """One rank's training: the UNet with the adapter, its optimizer and data, from a new adapter,
    ``config.adapter`` or the latest checkpoint in ``out``."""

    def __init__(self, config: Stage2Config, data, out, rank: int = 0, world_size: int = 1, device=None):
        import torch
        from diffusers import UNet2DConditionModel

        from train.models.personalizer import ADAPTER_FILE, install, new_adapter, read_adapter
        from train.models.router import load_frozen_parts

        self.config, self.out, self.rank, self.world_size = config, Path(out), rank, world_size
        self.device, self.autocast_dtype = training_device(device, config.mixed_precision)
        self.shards = dataset(data, split="train")
        revision = config.revision or None
        self.frozen = load_frozen_parts(config.base, config.image_encoder, config.image_encoder_subfolder,
                                        revision).to(self.device)
        self.unet = UNet2DConditionModel.from_pretrained(config.base, subfolder="unet", revision=revision)
        resume = latest_checkpoint(self.out)
        if resume is not None:
            state = read_adapter(resume / ADAPTER_FILE)
        elif config.adapter:
            state = read_adapter(Path(config.adapter) / ADAPTER_FILE)
        else:
            torch.manual_seed(config.seed)  # the projection's initial weights: the same on every rank and run
            state = new_adapter(self.unet, self.frozen.image_encoder.config.hidden_size)
        self.parameters = install(self.unet, state)
        self.unet.to(self.device)
        if config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.unet.train()
        # ranks run as many forwards as their batch has buckets: no per-forward buffer broadcast
        self.ddp, self.optimizer, self.scaler, self.ema = distributed_optimizer(
            self.unet, self.parameters, config, self.device, self.autocast_dtype, world_size, config.ema_decay,
            broadcast_buffers=False)
        with torch.no_grad():
            self.blank = blank_tokens(self.frozen.image_encoder, self.device)
        self.stream, self.loader, self.step = resumed_loader(self, make_decoder(config, self.frozen.image_encoder),
                                                             resume, collate_fn=collate_buckets)
        self.identity = {**identity_of(config, self.frozen.image_encoder.config), "data": str(data)}
        self.validation = held_out(data, make_decoder(config, self.frozen.image_encoder, normalize=True),
                                   config.validation_samples) if rank == 0 else []
        self.keys_read: list[str] = []

    def group_loss(self, group: dict, generator):
        """The MSE of one bucket's noise (v-prediction bases: velocity) predictions, with the drops for CFG."""
        import torch

        from train.models.router import clip_tokens, encode_text

        b = to_model(group, self.device)
        n, c = len(b["caption"]), self.config
        draw = torch.rand(n, generator=generator, device=self.device).tolist()
        drop_image = [d < c.image_drop or c.image_drop + c.text_drop <= d < c.image_drop + c.text_drop + c.both_drop
                      for d in draw]
        drop_text = [c.image_drop <= d < c.image_drop + c.text_drop + c.both_drop for d in draw]
        scheduler = self.frozen.forward_process
        with torch.no_grad():
            latents = self.frozen.vae.encode(b["target"]).latent_dist.sample(generator) * self.frozen.vae.config.scaling_factor
            text, pooled = encode_text(self.frozen, ["" if d else t for d, t in zip(drop_text, b["caption"])], self.device)
            tokens = clip_tokens(self.frozen.image_encoder, b["ref"])  # the reference is square already
            tokens = torch.where(torch.tensor(drop_image, device=self.device).view(n, 1, 1), self.blank, tokens)
        noise = torch.randn(latents.shape, generator=generator, device=self.device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator, device=self.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            pred = self.ddp(noisy, timesteps, text, added_cond_kwargs={
                "text_embeds": pooled, "time_ids": b["time_ids"], "image_embeds": [tokens[:, None]]}).sample
        velocity = scheduler.config.prediction_type == "v_prediction"  # SDXL base: epsilon
        target = scheduler.get_velocity(latents, noise, timesteps) if velocity else noise
        return (pred.float() - target).square().mean()

    def train_step(self, batch) -> float:
        """One optimizer step over the batch's bucket groups (gradients accumulated, synced once)."""
        import torch

        generator = torch.Generator(self.device).manual_seed(sample_seed(self.config.seed, f"{self.rank}-{self.step}"))
        groups, total, loss_sum = batch["groups"], len(batch["__key__"]), 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for i, group in enumerate(groups):
            sync = i == len(groups) - 1 or self.ddp is self.unet  # DDP: forward and backward both under no_sync
            with nullcontext() if sync else self.ddp.no_sync():
                loss = self.group_loss(group, generator) * (len(group["__key__"]) / total)
                self.scaler.scale(loss).backward()
            loss_sum += float(loss.detach())
        apply_gradients(self.optimizer, self.scaler, self.parameters, self.config.max_grad_norm)
        if self.ema is not None:
            self.ema.step(self.parameters)
        self.step += 1
        self.keys_read += batch["__key__"]
        return loss_sum

    def save(self, folder: Path | None = None) -> Path:
        """A checkpoint of this step (rank 0 only), written then renamed; the oldest beyond ``keep_checkpoints`` removed."""
        from train.models.personalizer import save_adapter

        state = training_state(self.optimizer, self.scaler, self.ema, self.loader, self.step)
        return write_checkpoint(folder or self.out / "checkpoints" / f"step-{self.step:06d}",
                                lambda scratch: save_adapter(scratch, self.unet, {**self.identity, "step": self.step}),
                                state, self.config.keep_checkpoints)

    def save_final(self) -> Path:
        """OUT/final: the adapter (EMA weights when EMA is on) with the image encoder beside it."""
        from train.models.personalizer import save_adapter

        folder = self.out / "final"
        shutil.rmtree(folder, ignore_errors=True)
        with ema_weights(self.ema, self.parameters):
            save_adapter(folder, self.unet, {**self.identity, "step": self.step, "ema": self.ema is not None},
                         self.frozen.image_encoder)
        return folder

    def pipeline(self):
        """A StableDiffusionXLPipeline over the training modules (DDIM, the paper's sampler)."""
        from diffusers import DDIMScheduler, StableDiffusionXLPipeline

        f = self.frozen
        return StableDiffusionXLPipeline(f.vae, f.text_encoder, f.text_encoder_2, f.tokenizer, f.tokenizer_2, self.unet,
                                         DDIMScheduler.from_config(f.scheduler.config))

    def validate(self, step: int, writer) -> dict:
        """The held-out pairs generated from their reference and caption: a grid (reference | generated |
        target), saved and shown in TensorBoard's ``writer``."""
        import torch

        from train.models.router import clip_tokens
        from train.standardize import to_uint8

        if not self.validation:
            return {}
        pipe, rows, size = self.pipeline(), [], tuple(self.config.resolution)
        pipe.set_progress_bar_config(disable=True)
        self.unet.eval()
        for sample in self.validation:
            ref = torch.from_numpy(sample["ref"])[None].to(self.device)
            with torch.no_grad():
                tokens = clip_tokens(self.frozen.image_encoder, ref)
            h, w = int(sample["time_ids"][4]), int(sample["time_ids"][5])
            generator = torch.Generator(self.device).manual_seed(sample_seed(self.config.seed, "validate-" + sample["__key__"]))
            with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                image = pipe(sample["caption"], height=h, width=w, num_inference_steps=self.config.inference_steps,
                             guidance_scale=self.config.guidance_scale, generator=generator, output_type="np",
                             ip_adapter_image_embeds=[torch.cat([self.blank, tokens])[:, None]]).images[0]
            cells = [to_uint8(ref)[0], np.round(image * 255).astype(np.uint8),
                     to_uint8(torch.from_numpy(sample["target"])[None])[0]]
            rows.append(np.concatenate([place(cell, size, 255) for cell in cells], axis=1))
        self.unet.train()
        grid = self.out / "samples" / f"step-{self.step:06d}.png"
        grid.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.concatenate(rows, axis=0)
        Image.fromarray(pixels).save(grid)
        writer.add_image("val/reference_generated_target", pixels, step, dataformats="HWC")
        return {"grid": str(grid)}


def held_out(data, decoder, limit: int) -> list[dict]:
    """Up to ``limit`` decoded split=test pairs; none when the data has no test records."""
    try:
        shards = dataset(data, split="test")
    except FileNotFoundError:
        log.warning("%s: no split=test records, so no validation grid", data)
        return []
    return [sample for sample, _ in zip(ShardStream(shards, decoder, batch_size=1).samples(epoch=0), range(limit))]


def train(config: Stage2Config, data, out, rank: int = 0, world_size: int = 1, device=None, report=None,
          progress: bool = False) -> dict:
    """Train (or resume) to ``config.steps`` in train.loop's run_steps (``report`` as there); the run's figures."""
    trainer = Trainer(config, data, out, rank, world_size, device)
    return run_steps(trainer, config, trainer.out, rank, world_size, trainer.validate, report, progress)
