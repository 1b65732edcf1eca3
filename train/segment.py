"""Reference-prompted segmentation with a trained router (AnyStory §3.3, Fig. 4), which is also the
router's evaluation. The image is encoded by the VAE and noised to ``segment_timestep`` (seeded;
0 by default: the paper feeds the encoded image itself), the UNet runs once with the subjects'
routing features, and every cross-attention layer's refined maps M_i, upsampled (bilinear) to the
image, are averaged over layers; each pixel goes to the route (subject or background) of the
largest average: one mask per subject.

Evaluation: mean IoU of these masks against the true instance masks over the subjects of held-out
(split=test) router samples, beside a layout-blind baseline that never looks at the image: each
subject slot's mask is the training set's mean instance mask of that slot, thresholded at half its
maximum; and the router's IoU again with each scene's references rotated among its subjects (a
router that found the figures but not who is who loses nothing there). The routing-map figure
lays out, as the paper's Figure 4 does, one row per subject and, for each chosen timestep, one
column per cross-attention layer (forward order), after a column with the scene and the
subject's reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shards.keys import sample_seed

FIGURE_CELL = 48  # px: the height of one map in the figure


def routed_forward(model, frozen, conditioning, b: dict, timestep: int, seed: int):
    """One inference forward of the routed UNet on batch ``b`` (model-ready tensors) at ``timestep``."""
    import torch

    latents = frozen.vae.encode(b["image"]).latent_dist.mode() * frozen.vae.config.scaling_factor
    generator = torch.Generator(latents.device).manual_seed(seed)
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    t = torch.full((latents.shape[0],), timestep, device=latents.device, dtype=torch.long)
    conditions = conditioning(b, model.reference_unet is not None)
    model(frozen.forward_process.add_noise(latents, noise, t), t, **conditions)
    return tuple(latents.shape[-2:])


def mean_maps(model, latent_hw, size_hw):
    """The soft maps of every cross-attention layer, upsampled to ``size_hw`` and averaged: B x R x H x W."""
    import torch.nn.functional as F

    from train.models.standardizer.modules import grid_of

    total = 0
    for soft in model.maps():
        b, routes, n = soft.shape
        grid = soft.float().reshape(b, routes, *grid_of(n, *latent_hw))
        total = total + F.interpolate(grid, size_hw, mode="bilinear", align_corners=False)
    return total / len(model.maps())


def predict_masks(model, frozen, conditioning, b: dict, timestep: int, seed: int):
    """Boolean masks B x S x H x W, one per subject slot (none for padded slots)."""
    import torch

    with torch.no_grad():
        latent_hw = routed_forward(model, frozen, conditioning, b, timestep, seed)
        maps = mean_maps(model, latent_hw, tuple(b["image"].shape[-2:]))
    subjects = b["subject_valid"].shape[1]
    winner = maps.argmax(1, keepdim=True)
    slots = torch.arange(subjects, device=maps.device).view(1, subjects, 1, 1)
    return (winner == slots) & (b["subject_valid"] > 0.5)[..., None, None]


def subject_ious(predicted, truth, valid) -> list[float]:
    """IoU of each valid subject's predicted against its true mask (both B x S x H x W)."""
    truth = truth > 0.5
    inter = (predicted & truth).flatten(2).sum(-1).float()
    union = (predicted | truth).flatten(2).sum(-1).float().clamp(min=1)
    return (inter / union)[valid > 0.5].tolist()


def rotate_valid(subjects, valid):
    """Each sample's valid subject slots rotated by one (subject i gets subject i+1's reference):
    B x S x ... -> the same shape, padded slots unchanged."""
    import torch

    out = subjects.clone()
    for i, count in enumerate(valid.sum(1).round().long().tolist()):
        out[i, :count] = torch.roll(subjects[i, :count], 1, dims=0)
    return out


def layout_blind_masks(shards, decoder, limit: int = 512):
    """The baseline's masks (S x H x W bool): per slot, the mean instance mask of up to ``limit``
    training samples, thresholded at half its maximum."""
    from train.data import ShardStream

    total, count = 0, 0
    for sample, _ in zip(ShardStream(shards, decoder, batch_size=1).samples(epoch=0), range(limit)):
        total, count = total + sample["masks"], count + 1
    mean = total / max(count, 1)
    peak = mean.reshape(mean.shape[0], -1).max(1)[:, None, None]
    return (mean >= np.maximum(peak / 2, 1e-6))


def colormap(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8 from dark purple to yellow (the paper's 'yellow is the effective region')."""
    low, mid, high = np.array([68, 1, 84.0]), np.array([33, 145, 140.0]), np.array([253, 231, 37.0])
    v = np.clip(values, 0, 1)[..., None]
    rgb = np.where(v < 0.5, low + (mid - low) * v * 2, mid + (high - mid) * (v - 0.5) * 2)
    return rgb.astype(np.uint8)


def routing_figure(model, frozen, conditioning, sample: dict, timesteps, seed: int) -> np.ndarray:
    """Figure 4's layout for one sample (model-ready tensors, batch of 1): rows = subjects; columns =
    scene | reference | for each timestep, every cross-attention layer's soft map M_i."""
    import torch
    from PIL import Image, ImageDraw

    from train.models.standardizer.modules import grid_of

    h_img, w_img = sample["image"].shape[-2:]
    cell = (round(FIGURE_CELL * w_img / h_img), FIGURE_CELL)
    subjects = int(sample["subject_valid"][0].sum())

    def picture(tensor):  # 3 x H x W in [-1, 1] -> a cell
        array = ((tensor.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return np.asarray(Image.fromarray(array).resize(cell, Image.BILINEAR))

    columns = {t: [] for t in timesteps}
    for t in timesteps:
        with torch.no_grad():
            latent_hw = routed_forward(model, frozen, conditioning, sample, t, seed)
        for soft in model.maps():
            grid = soft[0].float().reshape(soft.shape[1], *grid_of(soft.shape[-1], *latent_hw)).cpu().numpy()
            columns[t].append(grid)
    gap, label = 4, 14
    width = 2 * cell[0] + sum(len(c) * cell[0] + gap for c in columns.values()) + gap
    canvas = np.full((label + subjects * cell[1], width, 3), 255, np.uint8)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    x = 2 * cell[0] + gap
    for t, layers in columns.items():
        draw.text((x, 1), f"t={t}: {len(layers)} layers", fill=(0, 0, 0))
        x += len(layers) * cell[0] + gap
    canvas = np.array(image)
    for i in range(subjects):
        y = label + i * cell[1]
        canvas[y:y + cell[1], :cell[0]] = picture(sample["image"][0])
        canvas[y:y + cell[1], cell[0]:2 * cell[0]] = picture(sample["subjects"][0, i])
        x = 2 * cell[0] + gap
        for layers in columns.values():
            for grid in layers:
                resized = np.asarray(Image.fromarray((grid[i] * 255).astype(np.uint8)).resize(cell, Image.NEAREST))
                canvas[y:y + cell[1], x:x + cell[0]] = colormap(resized / 255.0)
                canvas[y:y + cell[1], x + cell[0] - 1] = 255  # a white line between layers
                x += cell[0]
            x += gap
    return canvas


class Evaluation:
    """The held-out router samples (``train.router.held_out`` picks them), the layout-blind
    baseline's masks (None: no IoU, the figure only), and what ``run`` writes."""

    def __init__(self, samples: list[dict], baseline, config):
        self.samples, self.baseline, self.config = samples, baseline, config

    def batches(self, device, size: int = 4):
        import torch
        for start in range(0, len(self.samples), size):
            chunk = self.samples[start:start + size]
            yield {"__key__": [s["__key__"] for s in chunk], "caption": [s["caption"] for s in chunk],
                   **{k: torch.from_numpy(np.stack([s[k] for s in chunk])).to(device)
                      for k in ("image", "subjects", "masks", "subject_valid")}}

    def ious(self, model, frozen, conditioning) -> tuple[float, float, float]:
        """(router mean IoU, layout-blind baseline mean IoU, router mean IoU with each scene's
        references rotated) over the held-out subjects. The rotated control tells routing by
        identity from routing by figure and layout: a router that only found the figures scores
        the same with the wrong references."""
        import torch

        router, baseline, rotated = [], [], []
        was_training = model.router.training
        model.router.eval()
        for b in self.batches(conditioning.device):
            seed = sample_seed(self.config.seed, "segment-" + b["__key__"][0])
            router += subject_ious(predict_masks(model, frozen, conditioning, b, self.config.segment_timestep, seed),
                                   b["masks"], b["subject_valid"])
            blind = torch.from_numpy(self.baseline).to(b["masks"].device).expand_as(b["masks"])
            baseline += subject_ious(blind, b["masks"], b["subject_valid"])
            wrong = {**b, "subjects": rotate_valid(b["subjects"], b["subject_valid"])}
            rotated += subject_ious(predict_masks(model, frozen, conditioning, wrong, self.config.segment_timestep,
                                                  seed), b["masks"], b["subject_valid"])
        model.router.train(was_training)
        return float(np.mean(router)), float(np.mean(baseline)), float(np.mean(rotated))

    def run(self, model, frozen, conditioning, out: Path, step: int, writer=None) -> dict:
        """IoUs, and the routing-map figure of the first held-out sample at OUT/figures/step-NNNNNN.png."""
        from PIL import Image

        figures = {}
        if self.baseline is not None:
            figures["iou"], figures["iou_layout_blind"], figures["iou_references_rotated"] = \
                self.ious(model, frozen, conditioning)
        was_training = model.router.training
        model.router.eval()
        first = next(self.batches(conditioning.device, size=1))
        figure = routing_figure(model, frozen, conditioning, first, self.config.figure_timesteps,
                                sample_seed(self.config.seed, "figure"))
        model.router.train(was_training)
        path = Path(out) / "figures" / f"step-{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(figure).save(path)
        if writer is not None:
            for name, value in figures.items():
                writer.add_scalar(f"val/{name}", value, step)
            writer.add_image("val/routing_maps", figure, step, dataformats="HWC")
        return {**figures, "figure": str(path)}


def segment(router: str | Path, image: str | Path, subjects: list, out: str | Path, device: str | None = None,
            timestep: int | None = None, seed: int = 0, overrides=()) -> list[str]:
    """``pairforge segment``: one mask PNG per subject (OUT/mask-<i>.png, 255 = the subject) for
    ``image``, at the image's own size; returns their paths. Subject images with alpha are put on
    white, as the router's references are. ``overrides`` ("base=DIR", ...) point at a moved base."""
    import torch
    from PIL import Image

    from train.data.kinds import fit_box, on_white, place
    from train.models.router import Conditioning, load_checkpoint

    model, frozen, identity = load_checkpoint(router, overrides)
    if not 1 <= len(subjects) <= identity["max_subjects"]:
        raise ValueError(f"{len(subjects)} subjects; this router takes 1 to {identity['max_subjects']}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, frozen = model.to(device).eval(), frozen.to(device)
    size, subject_size = tuple(identity["resolution"]), tuple(identity["subject_size"])

    def tensor(array, target):
        placed = place(array, target, 255).astype(np.float32) / 127.5 - 1
        return torch.from_numpy(placed).permute(2, 0, 1)

    def rgb(path):
        picture = np.asarray(Image.open(path).convert("RGBA"))
        return on_white(picture)

    scene = rgb(image)
    refs = torch.stack([tensor(rgb(s), subject_size) for s in subjects])
    count, slots = len(subjects), identity["max_subjects"]
    b = {"image": tensor(scene, size)[None].to(device), "caption": [""],
         "subjects": torch.cat([refs, torch.zeros(slots - count, *refs.shape[1:])])[None].to(device),
         "subject_valid": (torch.arange(slots) < count).float()[None].to(device)}
    masks = predict_masks(model, frozen, Conditioning(frozen, device), b,
                          identity["segment_timestep"] if timestep is None else timestep, seed)[0]
    _, ox, oy, nw, nh = fit_box((scene.shape[1], scene.shape[0]), size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        crop = (masks[i, oy:oy + nh, ox:ox + nw].cpu().numpy() * 255).astype(np.uint8)
        path = out / f"mask-{i}.png"
        Image.fromarray(crop).resize((scene.shape[1], scene.shape[0]), Image.NEAREST).save(path)
        paths.append(str(path))
    return paths
