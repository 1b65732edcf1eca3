"""Standardizer inference: DDIM (20 steps by default, classifier-free guidance on the CLIP image
condition) at the checkpoint's resolution, inputs fitted (one scale, centred padding) into it and
the output cropped back to the input's frame and size; batched. ``StandardizeStage`` runs it over
``synthetic_pair`` / ``composited_pair`` shards on either runner (a GPU actor per GPU on Ray), one
``standardized`` output shard per input shard, each record carrying the checkpoint's hash;
pairs.build runs the same inference (``LoadedStandardizer``) over curated photos. The target pose
is the checkpoint's standard pose (the mean A-pose of its training data), not the input record's
own, so a pair is standardized exactly as a photo would be."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

from render.compositing.composite import pose_image
from shards import storage
from shards.encoding import encode_png
from shards.keys import sample_seed
from shards.schema import STANDARDIZED
from shards.stage import Resources, Stage, StageUnavailable, rejected
from train.data.kinds import decoder_for, fit_box

INPUT_KINDS = ("composited_pair", "synthetic_pair")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class StandardizeConfig:
    checkpoint: str = ""            # a folder written by `pairforge train stage1` (step-NNNNNN or final)
    checkpoint_sha256: str = ""     # set by the job from the checkpoint: a new checkpoint is a new config
    steps: int = 20                 # DDIM steps (the paper's)
    guidance_scale: float = 3.5     # classifier-free guidance on the CLIP condition (Animate Anyone's); 1: off
    seed: int = 0                   # each sample's noise is drawn from a hash of this and its key
    batch_size: int = 8
    device: str = "auto"            # auto: cuda when the worker has a GPU, else cpu
    dtype: str = "float16"          # on cuda; cpu runs float32
    gpus: float = 1.0               # per worker: Ray runs one actor per GPU
    cpus: float = 1.0
    memory_mb: int = 12000

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.guidance_scale < 1:
            raise ValueError(f"guidance_scale {self.guidance_scale}: use >= 1 (1 turns guidance off)")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device {self.device!r}: use auto, cpu or cuda")


def generate(model, frozen, image, bg_mask, source_pose, target_pose, seeds: list[int], steps: int = 20,
             guidance_scale: float = 3.5):
    """Standardized images (B x 3 x H x W in [-1, 1], float32) from tensors at the model's resolution:
    the source ``image`` in [-1, 1], its ``bg_mask`` (1 = background), its pose image and the target's.
    Each sample's initial noise comes from its own seed, so results do not depend on batching."""
    import torch
    from diffusers import DDIMScheduler

    from train.models.standardizer import clip_image_embeds

    device = image.device
    dtype = next(model.parameters()).dtype
    scheduler = DDIMScheduler.from_config(frozen.scheduler.config)
    scheduler.set_timesteps(steps, device=device)
    scaling = frozen.vae.config.scaling_factor
    with torch.no_grad():
        reference = frozen.vae.encode(image.to(frozen.vae.dtype)).latent_dist.mode() * scaling
        embeds = clip_image_embeds(frozen.image_encoder, image)
        shape = (frozen.vae.config.latent_channels, image.shape[-2] // 8, image.shape[-1] // 8)
        latents = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        latents = latents.to(device) * scheduler.init_noise_sigma
        guided = guidance_scale > 1
        double = (lambda x: torch.cat([x, x])) if guided else (lambda x: x)
        inputs = [double(x.to(dtype)) for x in (reference, target_pose, bg_mask, source_pose)]
        embeds = torch.cat([torch.zeros_like(embeds), embeds]) if guided else embeds
        for t in scheduler.timesteps:
            noisy = scheduler.scale_model_input(double(latents), t).to(dtype)
            timestep = t.expand(noisy.shape[0]).to(device)
            pred = model(noisy, timestep, inputs[0], embeds.to(dtype), inputs[1], inputs[2], inputs[3]).float()
            if guided:
                unconditional, conditional = pred.chunk(2)
                pred = unconditional + guidance_scale * (conditional - unconditional)
            latents = scheduler.step(pred, t, latents).prev_sample
        decoded = frozen.vae.decode((latents / scaling).to(frozen.vae.dtype)).sample
    return decoded.float().clamp(-1, 1)


def to_uint8(images) -> np.ndarray:
    """B x 3 x H x W in [-1, 1] (torch) -> B x H x W x 3 uint8."""
    return ((images.permute(0, 2, 3, 1).cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def crop_back(image: np.ndarray, size: tuple[int, int], resolution: tuple[int, int]) -> np.ndarray:
    """The part of a generated ``resolution`` image where an input of ``size`` (w, h) was placed, at ``size``."""
    _, ox, oy, nw, nh = fit_box(size, resolution)
    crop = image[oy:oy + nh, ox:ox + nw]
    return crop if (nw, nh) == tuple(size) else np.asarray(Image.fromarray(crop).resize(tuple(size), Image.BICUBIC))


def standard_pose_image(identity: dict) -> np.ndarray:
    """The checkpoint's standard pose drawn at its resolution (H x W x 3 uint8)."""
    resolution = tuple(identity["resolution"])
    if not identity.get("standard_pose"):
        raise ValueError("the checkpoint has no standard pose (write it with `pairforge train stage1`)")
    return pose_image(np.asarray(identity["standard_pose"], np.float32), resolution)


SOURCE_IMAGE = {"composited_pair": "src.jpg", "synthetic_pair": "src.png", "photo": "image.jpg"}


class LoadedStandardizer:
    """A checkpoint on its device with the decoder of one source kind: the batched inference that
    ``StandardizeStage`` (pairs' sources) and pairs.build (curated photos) share."""

    def __init__(self, config: StandardizeConfig, kind: str, identity: dict):
        self.config, self.kind, self.identity = config, kind, identity
        self.resolution = tuple(identity["resolution"])
        self.model = self.frozen = self.device = None

    def load(self, who: str = "standardize") -> None:
        import torch

        from train.models.standardizer import load_checkpoint

        cuda = torch.cuda.is_available()
        if self.config.device == "cuda" and not cuda:
            raise StageUnavailable(f"{who}: device=cuda but this worker sees no GPU; --set device=cpu gpus=0")
        self.device = torch.device("cuda" if cuda and self.config.device != "cpu" else "cpu")
        dtype = getattr(torch, self.config.dtype) if self.device.type == "cuda" else torch.float32
        model, frozen, _ = load_checkpoint(self.config.checkpoint)
        self.model = model.to(self.device, dtype).eval()
        self.frozen = frozen.to(self.device)
        self._decoder = decoder_for(self.kind, self.resolution)
        self._target_pose = self._decoder.image(standard_pose_image(self.identity))

    def unload(self) -> None:
        self.model = self.frozen = None

    def run(self, records: dict[str, dict], crop: bool = True) -> tuple[dict[str, tuple[np.ndarray, int]],
                                                                          dict[str, str]]:
        """Decoded source records by key -> (key -> (the standardized image at the source's size, or
        the whole generated frame when not ``crop``, and its seed), key -> why a record could not be
        fed to the model); one batch on the device."""
        import torch

        prepared, failed, done = [], {}, {}
        for key, record in records.items():
            try:
                image = record[SOURCE_IMAGE[self.kind]]
                prepared.append((key, self._decoder(record), (image.shape[1], image.shape[0])))
            except Exception as error:  # a record that does not decode is a reject; the batch goes on
                failed[key] = f"input: {type(error).__name__}: {error}"
        if prepared:
            def stack(name):
                return torch.from_numpy(np.stack([p[1][name] for p in prepared])).to(self.device)
            target = torch.from_numpy(np.stack([self._target_pose] * len(prepared))).to(self.device)
            seeds = [sample_seed(self.config.seed, "standardize-" + p[0]) for p in prepared]
            images = to_uint8(generate(self.model, self.frozen, stack("image"), stack("bg_mask"), stack("pose"),
                                       target, seeds, self.config.steps, self.config.guidance_scale))
            for (key, _, size), image, seed in zip(prepared, images, seeds):
                done[key] = (crop_back(image, size, self.resolution) if crop else image, seed)
        return done, failed


class StandardizeStage(Stage):
    """Pairs' sources -> ``standardized`` records (``std.png`` at the source's size, json lineage)."""
    name = "standardize"
    schema = STANDARDIZED
    packages = ("torch", "diffusers", "transformers")

    def __init__(self, config: StandardizeConfig, kind: str, identity: dict):
        if kind not in INPUT_KINDS:
            raise ValueError(f"cannot standardize {kind!r} records; give {' or '.join(INPUT_KINDS)} shards")
        self.config, self.kind, self.identity = config, kind, identity
        self.batch_size = config.batch_size
        self.resources = Resources(cpus=config.cpus, gpus=config.gpus, memory_mb=config.memory_mb)
        self.decodes = frozenset({"src.jpg", "src_bgmask.png", "std.png", "json"} if kind == "composited_pair"
                                 else {"src.png", "std.png", "json"})
        self._standardizer = LoadedStandardizer(config, kind, identity)

    def setup(self) -> None:
        self._standardizer.load(self.name)

    def teardown(self) -> None:
        self._standardizer.unload()

    def process_batch(self, items: list[dict]) -> list[dict]:
        done, failed = self._standardizer.run({item["__key__"]: item["inputs"][0] for item in items})
        out = []
        for item in items:
            key = item["__key__"]
            if key in failed:
                out.append(rejected(key, failed[key]))
            else:
                image, seed = done[key]
                out.append(self._record(item, image, item["inputs"][0]["json"], seed))
        return out

    def _record(self, item: dict, image: np.ndarray, meta: dict, seed: int) -> dict:
        # Names, not paths, so a record's bytes do not depend on where the job ran (the resolved
        # config beside the output keeps the full paths); the checkpoint is identified by its hash.
        source_shard, source_key = storage.name(item["source_shard"]), item["__key__"]
        lineage = {"schema": STANDARDIZED.tag, "source_kind": self.kind, "source_shard": source_shard,
                   "source_key": source_key, "split": meta.get("split"), "character_id": meta.get("character_id"),
                   "checkpoint": storage.name(self.config.checkpoint),
                   "checkpoint_sha256": self.identity["weights_sha256"],
                   "steps": self.config.steps, "guidance_scale": self.config.guidance_scale, "seed": seed}
        return {"__key__": source_key, "std.png": encode_png(image), "json": json.dumps(lineage, sort_keys=True).encode()}
