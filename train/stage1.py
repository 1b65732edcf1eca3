"""Stage I training: the standardizer (train/models/standardizer) on synthetic pairs, in one
readable loop. One process, or one rank of a DDP job (``pairforge train stage1 --workers N`` runs
it under Ray Train; any launcher that initialises torch.distributed works the same).

Per step: the loader's batch (train.data; each rank reads its own samples) -> the target's latent
(VAE, sampled), the source's latent (VAE mean) and its CLIP image embedding (zeroed with
``condition_drop`` for classifier-free guidance) -> noise at a random timestep -> the model's
noise prediction -> epsilon MSE -> AdamW, optional EMA. Training reads the ``split=train``
records only and validation the ``split=test`` ones (held-out characters; the manifests say which).

Exact resume: a checkpoint (OUT/checkpoints/step-NNNNNN) holds the model's layout, the optimizer,
the gradient scaler, the EMA and the loader's state; the step's random draws come from a
generator seeded by (seed, rank, step), so a run resumed at step k gives the same weights at any
later step as one never stopped. Rank 0 writes checkpoints, TensorBoard logs (OUT/logs), and every
``validate_every`` steps samples the held-out (``split=test``) characters with DDIM: PSNR and SSIM
against the targets (the paper's Table 3) and a grid OUT/samples/step-NNNNNN.png (source |
generated | target). On GPU: bf16/fp16 autocast and gradient checkpointing; DDP without
find_unused_parameters (the ReferenceNet parameters no loss reaches are frozen instead)."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.keys import sample_seed
from train.data import ShardSet, ShardStream, decoder_for, to_model
from train.loop import (check_loop_settings, distributed_optimizer, ema_weights, kind_dataset, latest_checkpoint,
                        optimizer_step, resumed_loader, run_steps, training_device, training_state, write_checkpoint)
from train.data.kinds import fit_keypoints
from train.models.standardizer.layout import check_resolution

log = logging.getLogger(__name__)
KINDS = ("synthetic_pair", "composited_pair")


@dataclass(frozen=True)
class Stage1Config:
    base: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # SD-1.5 family: hub id or folder (unet, vae, scheduler)
    image_encoder: str = "openai/clip-vit-large-patch14"       # CLIP vision with projection: hub id or folder
    revision: str = ""
    resolution: tuple[int, int] = (512, 768)  # (width, height), the paper's
    fbdm: bool = True
    rpim: bool = True
    batch_size: int = 4                       # per worker (paper: 4 per GPU x 8 A100)
    steps: int = 50_000
    learning_rate: float = 1e-5               # not in the paper; Animate Anyone's
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    condition_drop: float = 0.1               # CLIP condition zeroed, for classifier-free guidance at inference
    mixed_precision: str = "bf16"             # on GPU (no | fp16 | bf16); CPU trains in float32
    gradient_checkpointing: bool = True
    ema_decay: float = 0.0                    # 0: no EMA; e.g. 0.9999
    seed: int = 0
    num_workers: int = 4                      # DataLoader workers per rank
    backgrounds: str = "procedural"           # synthetic_pair data: composited on the fly on these
    procedural_count: int = 10_000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    validate_every: int = 1000                # 0: never (a last validation still runs at the end)
    validation_samples: int = 8
    inference_steps: int = 20
    guidance_scale: float = 3.5
    log_every: int = 10

    def check(self) -> None:
        if any(v <= 0 or v % 8 for v in self.resolution):
            raise ValueError(f"resolution {list(self.resolution)}: width and height must be positive multiples of 8 "
                             f"(the VAE's factor; 64 for SD-1.5's UNet), e.g. [512, 768]")
        check_loop_settings(self)
        if not 0 <= self.condition_drop < 1 or not 0 <= self.ema_decay < 1:
            raise ValueError("condition_drop and ema_decay must be in [0, 1)")


def dataset(data, kinds=KINDS, split: str | None = None) -> ShardSet:
    """The pair shards (of one split); DatasetKindError (before any work) when they are not pairs."""
    return kind_dataset(data, kinds, split, "train stage1",
                        "`pairforge render` (its pairs/) or of `pairforge composite`")


def check_base(config: Stage1Config) -> dict:
    """The base UNet's config, read before any work; the resolution checked against its depth."""
    from diffusers import UNet2DConditionModel

    unet_config = UNet2DConditionModel.load_config(config.base, subfolder="unet", revision=config.revision or None)
    check_resolution(config.resolution, unet_config)
    return unet_config


def make_decoder(config: Stage1Config, kind: str, normalize: bool = False):
    options = {}
    if kind == "synthetic_pair":
        from render.compositing.backgrounds import open_backgrounds
        options = {"backgrounds": open_backgrounds(config), "seed": config.seed}
    return decoder_for(kind, tuple(config.resolution), normalize=normalize, **options)


def held_out(data, decoder, limit: int) -> list[dict]:
    """Up to ``limit`` decoded split=test samples (held-out characters); none when the data has no
    test records (a validation needs characters the model never saw)."""
    try:
        shards = dataset(data, split="test")
    except FileNotFoundError:
        log.warning("%s: no split=test records, so no validation", data)
        return []
    samples = ShardStream(shards, decoder, batch_size=1).samples(epoch=0)
    return [sample for sample, _ in zip(samples, range(limit))]


def standard_pose(shards: ShardSet, size: tuple[int, int], records: int = 64) -> list:
    """The mean target keypoints (fitted at ``size``) over the first ``records`` records: the
    target pose standardize draws for every input."""
    from shards.reader import iter_shard

    keypoints = []
    for shard in shards.shards:
        for record in iter_shard(shard.path):
            std = record["std.png"]
            keypoints.append(fit_keypoints(record["json"]["std"]["keypoints"], (std.shape[1], std.shape[0]), size))
            if len(keypoints) >= records:
                break
        if len(keypoints) >= records:
            break
    stacked = np.stack(keypoints)
    visible = stacked[..., 2] > 0
    mean = (stacked[..., :2] * visible[..., None]).sum(0) / np.maximum(visible.sum(0), 1)[:, None]
    standard = np.concatenate([mean, (visible.mean(0) > 0.5)[:, None].astype(np.float32)], axis=1)
    return np.round(standard, 2).tolist()


class Trainer:
    """One rank's training: the model, its optimizer and data, from the base or the latest checkpoint in ``out``."""

    def __init__(self, config: Stage1Config, data, out, rank: int = 0, world_size: int = 1, device=None):
        import torch

        from train.models.standardizer import load_base, load_checkpoint

        self.config, self.out, self.rank, self.world_size = config, Path(out), rank, world_size
        self.device, self.autocast_dtype = training_device(device, config.mixed_precision)
        self.shards = dataset(data, split="train")
        resume = latest_checkpoint(self.out)
        if resume is not None:
            model, frozen, identity = load_checkpoint(resume)
            self.standard_pose = identity["standard_pose"]
        else:
            torch.manual_seed(config.seed)  # the new modules' initial weights: the same on every rank and run
            model, frozen = load_base(config.base, config.image_encoder, config.fbdm, config.rpim,
                                      config.revision or None)
            self.standard_pose = None
        self.frozen = frozen.to(self.device)
        self.model = model.to(self.device)
        self.frozen_unused = self.model.freeze_unused(frozen.image_encoder.config.projection_dim)
        if config.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.model.train()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.ddp, self.optimizer, self.scaler, self.ema = distributed_optimizer(
            self.model, self.parameters, config, self.device, self.autocast_dtype, world_size, config.ema_decay)
        self.stream, self.loader, self.step = resumed_loader(self, make_decoder(config, self.shards.kind), resume)
        self.validation = held_out(data, make_decoder(config, self.shards.kind, normalize=True),
                                   config.validation_samples) if rank == 0 else []
        self.standard_pose = self.standard_pose or standard_pose(self.shards, tuple(config.resolution))
        self.keys_read: list[str] = []  # in order: what this rank trained on (ranks draw their own shards)

    def loss(self, batch):
        """The epsilon-MSE of one batch (the step's draws seeded by (seed, rank, step))."""
        import torch

        from train.models.standardizer import clip_image_embeds

        b = to_model(batch, self.device)
        generator = torch.Generator(self.device).manual_seed(sample_seed(self.config.seed, f"{self.rank}-{self.step}"))
        scaling, scheduler = self.frozen.vae.config.scaling_factor, self.frozen.scheduler
        with torch.no_grad():
            latents = self.frozen.vae.encode(b["std"]).latent_dist.sample(generator) * scaling
            reference = self.frozen.vae.encode(b["image"]).latent_dist.mode() * scaling
            embeds = clip_image_embeds(self.frozen.image_encoder, b["image"])
        n = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator, device=self.device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator, device=self.device)
        keep = torch.rand(n, generator=generator, device=self.device) >= self.config.condition_drop
        embeds = embeds * keep.view(n, 1, 1).to(embeds.dtype)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            pred = self.ddp(noisy, timesteps, reference, embeds, b["std_pose"], b["bg_mask"], b["pose"])
        return (pred.float() - noise).square().mean()

    def train_step(self, batch) -> float:
        loss = self.loss(batch)
        optimizer_step(loss, self.optimizer, self.scaler, self.parameters, self.config.max_grad_norm)
        if self.ema is not None:
            self.ema.step(self.parameters)
        self.step += 1
        self.keys_read += batch["__key__"]
        return float(loss.detach())

    def save(self, folder: Path | None = None) -> Path:
        """A checkpoint of this step (rank 0 only): OUT/checkpoints/step-NNNNNN, written then renamed;
        the oldest beyond ``keep_checkpoints`` removed."""
        from train.models.standardizer import save_checkpoint

        state = training_state(self.optimizer, self.scaler, self.ema, self.loader, self.step)
        return write_checkpoint(folder or self.out / "checkpoints" / f"step-{self.step:06d}",
                                lambda scratch: save_checkpoint(scratch, self.model, self.frozen, self.config.resolution,
                                                                self.standard_pose,
                                                                {"step": self.step, "base": self.config.base}),
                                state, self.config.keep_checkpoints)

    def save_final(self) -> Path:
        """OUT/final: the layout standardize loads, with the EMA weights when EMA is on."""
        from train.models.standardizer import save_checkpoint

        folder = self.out / "final"
        shutil.rmtree(folder, ignore_errors=True)
        with ema_weights(self.ema, self.parameters):
            save_checkpoint(folder, self.model, self.frozen, self.config.resolution, self.standard_pose,
                            {"step": self.step, "base": self.config.base, "ema": self.ema is not None})
        return folder

    def validate(self, step: int, writer) -> dict:
        """PSNR and SSIM of DDIM samples of the held-out characters against their targets (also to
        TensorBoard's ``writer``), and the grid."""
        import torch
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        from train.standardize import generate, to_uint8

        if not self.validation:
            return {}
        self.model.eval()

        def stack(name):
            return torch.from_numpy(np.stack([s[name] for s in self.validation])).to(self.device)

        keys = [s["__key__"] for s in self.validation]
        generated = generate(self.model, self.frozen, stack("image"), stack("bg_mask"), stack("pose"),
                             stack("std_pose"), [sample_seed(self.config.seed, "validate-" + k) for k in keys],
                             self.config.inference_steps, self.config.guidance_scale)
        self.model.train()
        target, prediction = (stack("std") + 1) / 2, (generated + 1) / 2
        metrics = {"psnr": float(peak_signal_noise_ratio(prediction, target, data_range=1.0)),
                   "ssim": float(structural_similarity_index_measure(prediction, target, data_range=1.0))}
        rows = [np.concatenate(row, axis=1) for row in zip(to_uint8(stack("image")), to_uint8(generated),
                                                            to_uint8(stack("std")))]
        grid = self.out / "samples" / f"step-{self.step:06d}.png"
        grid.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image
        Image.fromarray(np.concatenate(rows, axis=0)).save(grid)
        for name, value in metrics.items():
            writer.add_scalar(f"val/{name}", value, step)
        return {**metrics, "grid": str(grid)}


def train(config: Stage1Config, data, out, rank: int = 0, world_size: int = 1, device=None, report=None,
          progress: bool = False) -> dict:
    """Train (or resume) to ``config.steps`` in train.loop's run_steps (``report`` as there); the
    run's figures, with how many ReferenceNet parameters no loss reaches (frozen, so DDP needs no search)."""
    trainer = Trainer(config, data, out, rank, world_size, device)
    result = run_steps(trainer, config, trainer.out, rank, world_size, trainer.validate, report, progress,
                       reported=("psnr", "ssim"))
    return {**result, "frozen_unused": len(trainer.frozen_unused)}
