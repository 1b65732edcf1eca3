"""Router training (AnyStory §3.4, second stage): the router (train/models/router) on router_sample
shards, with the UNet, VAE, text encoders, CLIP and the subject encoder frozen, in one readable
loop. One process, or one rank of a DDP job (``pairforge train router --workers N`` runs it under
Ray Train; any launcher that initialises torch.distributed works the same).

Per step: the loader's batch (train.data; 2-4 subjects per scene stacked to ``max_subjects`` with
``subject_valid``) -> the scene's latent (VAE, sampled), the subjects' latents (VAE mean, for the
ReferenceNet) and CLIP tokens, a black image's CLIP tokens (the background route), the caption's
SDXL text conditioning -> noise at a random timestep, subject conditions dropped on
``condition_drop`` of the samples (their E_i replaced by the background's, for classifier-free
guidance) -> the noise prediction and every cross-attention layer's routing maps -> epsilon MSE +
lambda x the routing loss (train.models.router.routing_loss: the instance masks at each layer's
grid; on the refined maps as the paper has it, plus the same term on the coarse maps, which
otherwise get no gradient) -> AdamW on the router only. Training reads the ``split=train`` records and validation the
``split=test`` ones.

Exact resume: a checkpoint (OUT/checkpoints/step-NNNNNN) holds the router layout, the optimizer,
the gradient scaler and the loader's state; the step's draws (noise, timesteps, condition drop,
Gumbel noise) come from generators seeded by (seed, rank, step), so a run resumed at step k gives
the same weights at any later step as one never stopped. Rank 0 writes checkpoints, TensorBoard
logs (OUT/logs: losses, the held-out mean IoU of train/segment.py, and the routing-map figure in
the layout of the paper's Figure 4) and OUT/final. On GPU: bf16/fp16 autocast and gradient
checkpointing of the frozen UNet; DDP over the router's parameters (every one is used each step).

Timesteps: the paper trains at every noise level (``timesteps`` [0, 1000], the default). A latent
of a few cells per subject loses the scene at a lower t than SDXL's 128x128 one (how much of an
image survives a noise level depends on its resolution), and the routing loss where the scene is
gone teaches only the prior, background everywhere. Measured on the tiny router base at 64x96: a
linear read-out of the 8x8 cells' colours explains 0.80 / 0.55 / 0.18 / 0.00 of their variance
from the noisy latent at t = 0 / 200 / 500 / 999 (0.58 / 0.51 / 0.35 / 0.00 from the first
cross-attention layer's input). Tiny runs (the router test) therefore train at [0, 200]: a config value, not code."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from shards.keys import sample_seed
from train.data import ShardSet, ShardStream, decoder_for, to_model
from train.loop import (PRECISIONS, check_sdxl_unet, distributed_optimizer, kind_dataset, latest_checkpoint,
                        optimizer_step, resumed_loader, run_steps, training_device, training_state, write_checkpoint)

log = logging.getLogger(__name__)
KIND = "router_sample"


@dataclass(frozen=True)
class RouterConfig:
    base: str = "stabilityai/stable-diffusion-xl-base-1.0"  # SDXL family: hub id or folder
    image_encoder: str = "h94/IP-Adapter"                    # CLIP vision with projection: hub id or folder
    image_encoder_subfolder: str = "models/image_encoder"    # ViT-H/14, the paper's
    subject_encoder: str = ""        # a folder with subject_encoder/ (+ reference_unet/); "": fresh from the seed
    revision: str = ""
    resolution: tuple[int, int] = (1024, 1024)  # (width, height) of the scene
    subject_size: tuple[int, int] = (512, 512)  # each reference subject (the paper's ReferenceNet input)
    max_subjects: int = 4
    reference_net: bool = True
    eta: float = 1.0                 # strength of the CLIP subject condition
    gamma: float = 0.0               # strength of the ReferenceNet condition
    router_width: int = 256
    router_depth: int = 4            # the routing QFormer's layers (the paper's 4)
    subject_tokens: int = 4          # m: the subject QFormer's queries (fresh subject encoders only)
    subject_width: int = 768
    routing_weight: float = 0.1      # lambda
    batch_size: int = 8              # per worker (paper: 64 over 8 A100)
    steps: int = 20_000
    learning_rate: float = 1e-4      # the paper's
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    condition_drop: float = 0.1
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    seed: int = 0
    num_workers: int = 4
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    validate_every: int = 1000       # 0: only at the end
    validation_samples: int = 16
    segment_timestep: int = 0        # the noise level at which segmentation reads the maps (the paper: none)
    timesteps: tuple[int, int] = (0, 1000)  # t drawn uniformly from [low, high): see the module docstring
    figure_timesteps: tuple[int, ...] = (999, 500, 200)
    log_every: int = 10

    def check(self) -> None:
        if any(v <= 0 or v % 8 for v in (*self.resolution, *self.subject_size)):
            raise ValueError(f"resolution {list(self.resolution)} and subject_size {list(self.subject_size)}: "
                             f"sides must be positive multiples of 8 (the VAE's factor), e.g. [1024, 1024]")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision {self.mixed_precision!r}: use one of {', '.join(PRECISIONS)}")
        if not 2 <= self.max_subjects <= 4:
            raise ValueError("max_subjects must be 2..4 (router samples hold 2 to 4 subjects)")
        if min(self.batch_size, self.steps, self.checkpoint_every, self.keep_checkpoints, self.log_every,
               self.router_width, self.router_depth, self.subject_tokens) < 1 or self.num_workers < 0:
            raise ValueError("batch_size, steps, checkpoint_every, keep_checkpoints, log_every, router_width, "
                             "router_depth and subject_tokens must be >= 1; num_workers >= 0")
        if not 0 <= self.condition_drop < 1 or self.routing_weight < 0:
            raise ValueError("condition_drop must be in [0, 1) and routing_weight >= 0")
        if not all(0 <= t < 1000 for t in (self.segment_timestep, *self.figure_timesteps)):
            raise ValueError("segment_timestep and figure_timesteps must be in [0, 1000)")
        if len(self.timesteps) != 2 or not 0 <= self.timesteps[0] < self.timesteps[1] <= 1000:
            raise ValueError(f"timesteps {list(self.timesteps)}: give [low, high] with 0 <= low < high <= 1000, "
                             f"e.g. [0, 1000] (every noise level, the paper's)")


def dataset(data, split: str | None = None) -> ShardSet:
    """The router_sample shards (of one split); DatasetKindError (before any work) for other records."""
    return kind_dataset(data, (KIND,), split, "train router", "`pairforge router`")


def check_base(config: RouterConfig) -> None:
    """The base UNet read before any work: SDXL-shaped, and the resolution a whole number of latents at every level."""
    from train.models.standardizer.layout import check_resolution

    unet_config = check_sdxl_unet(config.base, config.revision, "the router")
    check_resolution(config.resolution, unet_config)
    check_resolution(config.subject_size, unet_config)


def make_decoder(config: RouterConfig, normalize: bool = False):
    return decoder_for(KIND, tuple(config.resolution), subject_size=tuple(config.subject_size),
                       max_subjects=config.max_subjects, normalize=normalize)


def identity_of(config: RouterConfig) -> dict:
    """What a checkpoint must record to be loaded without the training config."""
    return {"base": config.base, "image_encoder": config.image_encoder,
            "image_encoder_subfolder": config.image_encoder_subfolder, "revision": config.revision,
            "resolution": list(config.resolution), "subject_size": list(config.subject_size),
            "max_subjects": config.max_subjects, "eta": config.eta, "gamma": config.gamma,
            "segment_timestep": config.segment_timestep}


def held_out(data, config: RouterConfig):
    """train.segment's Evaluation on up to ``validation_samples`` split=test samples (None when 0 are
    asked for). Data with no split=test records gets the routing-map figure of a training scene and no IoU."""
    from train.segment import Evaluation, layout_blind_masks

    if config.validation_samples < 1:
        return None
    decoder = make_decoder(config, normalize=True)
    try:
        test, baseline = dataset(data, split="test"), layout_blind_masks(dataset(data, split="train"), decoder)
    except FileNotFoundError:
        log.warning("%s: no split=test router samples: no IoU, the figure shows a training scene", data)
        test, baseline = dataset(data, split="train"), None
    samples = [s for s, _ in zip(ShardStream(test, decoder, batch_size=1).samples(epoch=0),
                                 range(config.validation_samples))]
    return Evaluation(samples, baseline, config)


class Trainer:
    """One rank's training: the routed UNet, its optimizer and data, from the base or the latest checkpoint in ``out``."""

    def __init__(self, config: RouterConfig, data, out, rank: int = 0, world_size: int = 1, device=None):
        import torch

        from train.models.router import Conditioning, load_base, load_checkpoint

        self.config, self.out, self.rank, self.world_size = config, Path(out), rank, world_size
        self.device, self.autocast_dtype = training_device(device, config.mixed_precision)
        self.shards = dataset(data, split="train")
        resume = latest_checkpoint(self.out)
        if resume is not None:
            model, frozen, _ = load_checkpoint(resume)
        else:
            torch.manual_seed(config.seed)  # the new modules' initial weights: the same on every rank and run
            model, frozen = load_base(config.base, config.image_encoder, config.image_encoder_subfolder,
                                      config.subject_encoder, config.reference_net, config.eta, config.gamma,
                                      config.router_width, config.router_depth, config.subject_tokens,
                                      config.subject_width, config.revision or None)
        self.frozen = frozen.to(self.device)
        self.model = model.to(self.device)
        if config.gradient_checkpointing:
            self.model.unet.enable_gradient_checkpointing()
        self.model.router.train()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.ddp, self.optimizer, self.scaler, self.ema = distributed_optimizer(  # no EMA: self.ema is None
            self.model, self.parameters, config, self.device, self.autocast_dtype, world_size)
        self.conditioning = Conditioning(self.frozen, self.device)
        self.stream, self.loader, self.step = resumed_loader(self, make_decoder(config), resume)
        self.keys_read: list[str] = []

    def losses(self, batch):
        """(total, diffusion, routing) of one batch; the step's draws seeded by (seed, rank, step)."""
        import torch

        from train.models.router import routing_loss

        b = to_model(batch, self.device)
        step_seed = sample_seed(self.config.seed, f"{self.rank}-{self.step}")
        generator = torch.Generator(self.device).manual_seed(step_seed)
        scheduler = self.frozen.forward_process
        with torch.no_grad():
            latents = self.frozen.vae.encode(b["image"]).latent_dist.sample(generator) * self.frozen.vae.config.scaling_factor
        conditions = self.conditioning(b, self.model.reference_unet is not None)
        n = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator, device=self.device)
        low, high = self.config.timesteps
        timesteps = torch.randint(low, min(high, scheduler.config.num_train_timesteps), (n,), generator=generator,
                                  device=self.device)
        keep = torch.rand(n, generator=generator, device=self.device) >= self.config.condition_drop
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            pred = self.ddp(noisy, timesteps, keep=keep, gumbel_seed=step_seed, **conditions)
        diffusion = (pred.float() - noise).square().mean()
        latent_hw = tuple(latents.shape[-2:])
        routing = routing_loss(self.model.maps(), b["masks"], b["subject_valid"], latent_hw)
        # the coarse maps too (Mask2Former's deep supervision): they only pick the refinement's mask
        # through an argmax, so without their own term their projections would never learn
        routing = routing + routing_loss(self.model.maps(coarse=True), b["masks"], b["subject_valid"], latent_hw)
        return diffusion + self.config.routing_weight * routing, diffusion, routing

    def train_step(self, batch) -> dict:
        loss, diffusion, routing = self.losses(batch)
        optimizer_step(loss, self.optimizer, self.scaler, self.parameters, self.config.max_grad_norm)
        self.step += 1
        self.keys_read += batch["__key__"]
        return {"loss": float(loss.detach()), "diffusion": float(diffusion.detach()), "routing": float(routing.detach())}

    def save(self, folder: Path | None = None, resumable: bool = True) -> Path:
        """A checkpoint of this step (rank 0 only), written then renamed; the oldest beyond ``keep_checkpoints`` removed."""
        from train.models.router import save_checkpoint

        state = training_state(self.optimizer, self.scaler, None, self.loader, self.step) if resumable else None
        return write_checkpoint(folder or self.out / "checkpoints" / f"step-{self.step:06d}",
                                lambda scratch: save_checkpoint(scratch, self.model,
                                                                {**identity_of(self.config), "step": self.step}),
                                state, self.config.keep_checkpoints)

    def save_final(self) -> Path:
        """OUT/final: the router and subject encoder in the layout segment loads, no training state."""
        return self.save(self.out / "final", resumable=False)


def train(config: RouterConfig, data, out, rank: int = 0, world_size: int = 1, device=None, report=None,
          progress: bool = False) -> dict:
    """Train (or resume) to ``config.steps`` in train.loop's loop; returns the run's figures (with the
    held-out IoU). ``report(metrics)`` is called by every rank at each checkpoint (Ray Train's
    ``ray.train.report``)."""
    out = Path(out)
    trainer = Trainer(config, data, out, rank, world_size, device)
    evaluation = held_out(data, config) if rank == 0 else None

    def validate(step, writer):
        if evaluation is not None:
            return evaluation.run(trainer.model, trainer.frozen, trainer.conditioning, out, step, writer)

    return run_steps(trainer, config, out, rank, world_size, validate, report, progress, reported=("iou",))
