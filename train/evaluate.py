"""``pairforge eval stage2``: a trained Stage II adapter in a stock ``StableDiffusionXLPipeline``
(``load_ip_adapter``, DDIM as the paper samples) generates ``images_per_prompt`` images for every
reference x prompt, scored as SerialGen §4.2 (Tables 1, 2 and 4) does, all as 100 x cosine:

- CLIP-I: the CLIP image embeddings of the reference and of each generated image, both with the
  background removed (the person kept on white: the reference by a white-background threshold, as
  standardized references are on white; the generated image by a person segmenter, passed in as
  ``detect``: curate.people's detector in ``pairforge eval stage2``), averaged over all images;
- CLIP-T: the generated image's CLIP image embedding against its prompt's CLIP text embedding
  (the whole image: the prompt describes the background too);
- AP-CLIP-I: per reference, CLIP-I between every pair of its generated images made from different
  prompts (background removed), averaged over pairs, then over references: appearance consistency
  across prompts;
- Face Sim.: the face-identity embeddings (an ArcFace ONNX model, ``face_model``: insightface's
  w600k_r50.onnx or any 112x112 face-recognition ONNX with one embedding output, run by
  onnxruntime) of the reference's face and each generated image's, 100 x cosine averaged over the
  images where both faces are found (the face boxes of the same ``detect``, passed in by
  ``pairforge eval stage2``); faces are cropped square around the detector's box with a margin,
  not aligned by landmarks as insightface does, so figures run a little below insightface's own.
  Without ``face_model`` it is reported as not computed.

Every image is padded to a square on white before CLIP's processor (its centre crop would cut a
full-body figure). Written to OUT: metrics.json, metrics.csv and metrics.md (one row per reference
and the mean), grid.png (per reference: the reference, then the first image of each prompt) and
images/REF-PROMPT-K.png."""
from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shards.keys import sample_seed
from train.data.kinds import place

BACKGROUNDS = ("mediapipe", "opencv", "white")


@dataclass(frozen=True)
class EvalConfig:
    base: str = ""                    # "": the base the adapter was trained on (its identity)
    clip_model: str = "openai/clip-vit-large-patch14"  # a CLIPModel (text + vision) with its processor
    images_per_prompt: int = 4        # the paper's 4 per (character, prompt)
    inference_steps: int = 20         # DDIM, the paper's
    guidance_scale: float = 5.0
    resolution: tuple[int, int] = (512, 768)
    seed: int = 0
    background: str = "mediapipe"     # person masks of generated images: mediapipe | opencv (curate.people) | white
    white_threshold: int = 240        # a pixel is background when every channel is at least this
    max_references: int = 40          # the paper's test set: 40 characters
    face_model: str = ""              # an ArcFace ONNX file (insightface buffalo_l's w600k_r50.onnx); "": no Face Sim.
    face_margin: float = 0.2          # the face crop: the detector's box grown by this on each side, made square
    device: str = ""

    def check(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background {self.background!r}: use one of {', '.join(BACKGROUNDS)}")
        if min(self.images_per_prompt, self.inference_steps, self.max_references) < 1:
            raise ValueError("images_per_prompt, inference_steps and max_references must be >= 1")
        if any(v <= 0 or v % 8 for v in self.resolution):
            raise ValueError(f"resolution {list(self.resolution)}: sides must be positive multiples of 8")
        if self.face_model and not Path(self.face_model).is_file():
            raise ValueError(f"face_model {self.face_model}: no such file; give an ArcFace .onnx (insightface's "
                             f"w600k_r50.onnx) or leave it empty")


def white_mask(rgb: np.ndarray, threshold: int) -> np.ndarray:
    """uint8 HxW, 255 where a pixel is not near-white (the figure of a standardized reference)."""
    return np.where((rgb < threshold).any(-1), 255, 0).astype(np.uint8)


def on_white_where(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The masked part of ``rgb`` over white: the background removed."""
    alpha = mask[..., None].astype(np.float32) / 255
    return np.round(rgb * alpha + 255 * (1 - alpha)).astype(np.uint8)


def square(rgb: np.ndarray) -> Image.Image:
    side = max(rgb.shape[:2])
    return Image.fromarray(place(rgb, (side, side), 255))


class Clip:
    """CLIPModel's normalised image and text embeddings (the projected pooled outputs)."""

    def __init__(self, name: str, device):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(name).to(device).eval()
        self.processor, self.device = CLIPProcessor.from_pretrained(name), device

    def images(self, images: list[np.ndarray]):
        import torch

        inputs = self.processor(images=[square(i) for i in images], return_tensors="pt").to(self.device)
        with torch.no_grad():
            return torch.nn.functional.normalize(self.model.get_image_features(**inputs).pooler_output, dim=-1)

    def texts(self, texts: list[str]):
        import torch

        inputs = self.processor(text=texts, padding="max_length", truncation=True, return_tensors="pt").to(self.device)
        with torch.no_grad():
            return torch.nn.functional.normalize(self.model.get_text_features(**inputs).pooler_output, dim=-1)


def load_pipeline(adapter: Path, identity: dict, base: str, device):
    """A stock StableDiffusionXLPipeline of ``base`` with the adapter loaded by load_ip_adapter (its
    image encoder from ADAPTER/image_encoder, or the one the identity names), DDIM; AdapterError
    before loading weights when the adapter does not fit the base."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import are_progress_bars_disabled

    from train.models.personalizer import ADAPTER_FILE, check_adapter_file
    from train.models.personalizer.model import loader_warning_silenced

    revision = identity.get("revision") or None
    own_encoder = (adapter / "image_encoder").is_dir()
    encoder = (str(adapter / "image_encoder"), "") if own_encoder else \
        (identity["image_encoder"], identity.get("image_encoder_subfolder", ""))
    clip_width = CLIPVisionConfig.from_pretrained(encoder[0], subfolder=encoder[1]).hidden_size
    check_adapter_file(adapter / ADAPTER_FILE, UNet2DConditionModel.load_config(base, subfolder="unet", revision=revision),
                       clip_width, f"--adapter {adapter} on base {base}")
    if are_progress_bars_disabled():  # diffusers' own bars follow the hub's switch (--quiet sets it)
        diffusers_logging.disable_progress_bar()
    pipe = StableDiffusionXLPipeline.from_pretrained(base, revision=revision)
    if not own_encoder:
        pipe.register_modules(image_encoder=CLIPVisionModelWithProjection.from_pretrained(encoder[0], subfolder=encoder[1]))
    with loader_warning_silenced():
        pipe.load_ip_adapter(str(adapter), subfolder="", weight_name=ADAPTER_FILE)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.device(device))


def face_crop(rgb: np.ndarray, box, margin: float) -> np.ndarray:
    """The square around a face box grown by ``margin`` on each side, padded with black where it leaves the image."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = max(1, int(round(side)))
    out = np.zeros((size, size, 3), np.uint8)
    h, w = rgb.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, left), max(0, top), min(w, left + size), min(h, top + size)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = rgb[sy0:sy1, sx0:sx1]
    return out


class FaceEmbedder:
    """An ArcFace-style ONNX model on onnxruntime: RGB face crops resized to its input side,
    (x - 127.5) / 127.5, NCHW float32 (insightface's preprocessing) -> L2-normalised embeddings."""

    def __init__(self, path: str):
        try:
            import onnxruntime
        except ImportError:
            raise RuntimeError("face_model needs onnxruntime: pip install 'pairforge[eval]'") from None
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name, side = model_input.name, model_input.shape[-1]
        self.side = side if isinstance(side, int) else 112

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        batch = np.stack([np.asarray(Image.fromarray(c).resize((self.side, self.side), Image.BILINEAR))
                          for c in crops]).astype(np.float32)
        batch = ((batch - 127.5) / 127.5).transpose(0, 3, 1, 2)
        (embeddings,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[:1]
        embeddings = embeddings.reshape(len(crops), -1)
        return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def face_similarity(faces: FaceEmbedder, reference: np.ndarray, box, generated: list[np.ndarray], boxes: list,
                    margin: float) -> tuple[float | None, int]:
    """(100 x mean cosine between the reference's face (``box``) and each generated face (``boxes``,
    None where none was found), or None; how many generated images had a face, counted only when
    the reference has one)."""
    if box is None:
        return None, 0
    found = [(rgb, b) for rgb, b in zip(generated, boxes) if b is not None]
    if not found:
        return None, 0
    embeddings = faces.embed([face_crop(reference, box, margin)] + [face_crop(rgb, b, margin) for rgb, b in found])
    return 100 * float((embeddings[1:] @ embeddings[0]).mean()), len(found)


def evaluate(adapter, prompts: list[str], references: list[tuple[str, np.ndarray]], out, config: EvalConfig,
             detect=None) -> dict:
    """Generate and score (module docstring); returns the table. ``detect(rgb)`` (run once per
    image) gives ``.mask`` (uint8 HxW, the person: removes generated backgrounds unless
    ``background=white``, which thresholds) and ``.face_box`` ([x0, y0, x1, y1] or None: Face Sim.
    with ``face_model``); None: white threshold and no Face Sim."""
    import torch

    from train.models.personalizer import read_identity

    adapter, out = Path(adapter), Path(out)
    identity = read_identity(adapter)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(adapter, identity, config.base or identity["base"], device)
    clip = Clip(config.clip_model, device)
    faces = FaceEmbedder(config.face_model) if config.face_model and detect is not None else None
    faces_found = 0
    encoder_side = pipe.image_encoder.config.image_size
    width, height = config.resolution
    (out / "images").mkdir(parents=True, exist_ok=True)
    text = clip.texts(prompts)
    rows, grid_rows, found = [], [], []
    for name, reference in references[:config.max_references]:
        made = {}  # (prompt index, k) -> generated rgb
        for (p, prompt), k in itertools.product(enumerate(prompts), range(config.images_per_prompt)):
            generator = torch.Generator(device).manual_seed(sample_seed(config.seed, f"{name}-{p}-{k}"))
            made[p, k] = pipe(prompt, ip_adapter_image=Image.fromarray(place(reference, (encoder_side,) * 2, 255)),
                              height=height, width=width, num_inference_steps=config.inference_steps,
                              guidance_scale=config.guidance_scale, generator=generator).images[0]
            made[p, k].save(out / "images" / f"{name}-{p:02d}-{k}.png")
        keys = list(made)
        generated = [np.asarray(made[key].convert("RGB")) for key in keys]
        detections = [detect(rgb) for rgb in generated] if detect is not None else None
        masks = [d.mask for d in detections] if detections and config.background != "white" else \
            [white_mask(rgb, config.white_threshold) for rgb in generated]
        found += [bool((m > 127).any()) for m in masks]
        ref_embed = clip.images([on_white_where(reference, white_mask(reference, config.white_threshold))])
        gen_fg = clip.images([on_white_where(rgb, m) for rgb, m in zip(generated, masks)])
        gen_full = clip.images(generated)
        clip_i = (gen_fg @ ref_embed.T).squeeze(1)
        clip_t = (gen_full * text[[p for p, _ in keys]]).sum(-1)
        across = [float(gen_fg[i] @ gen_fg[j]) for i, j in itertools.combinations(range(len(keys)), 2)
                  if keys[i][0] != keys[j][0]]
        face_sim, with_face = face_similarity(faces, reference, detect(reference).face_box, generated,
                                              [d.face_box for d in detections], config.face_margin) \
            if faces is not None else (None, 0)
        faces_found += with_face
        rows.append({"reference": name, "clip_i": 100 * float(clip_i.mean()), "clip_t": 100 * float(clip_t.mean()),
                     "ap_clip_i": 100 * float(np.mean(across)) if across else None, "face_sim": face_sim,
                     "images": len(keys)})
        grid_rows.append([place(reference, (width, height), 255)] +
                         [np.asarray(made[p, 0].convert("RGB")) for p in range(len(prompts))])
    mean = {"reference": "mean", "images": sum(r["images"] for r in rows)}
    for metric in ("clip_i", "clip_t", "ap_clip_i", "face_sim"):
        values = [r[metric] for r in rows if r[metric] is not None]
        mean[metric] = float(np.mean(values)) if values else None
    table = {"adapter": str(adapter), "weights_sha256": identity["weights_sha256"], "base": config.base or identity["base"],
             "clip_model": config.clip_model, "background": config.background, "prompts": prompts,
             "person_found": float(np.mean(found)) if found else 0.0,
             "face_similarity": (f"{config.face_model}: faces found in {faces_found} of {mean['images']} generated "
                                 f"images (and their references)") if faces is not None else
                                "not computed: no face-identity (ArcFace) model is configured (face_model)",
             "rows": rows + [mean]}
    write_table(table, out)
    Image.fromarray(np.concatenate([np.concatenate(row, axis=1) for row in grid_rows], axis=0)).save(out / "grid.png")
    return table


def read_references(source: str, limit: int) -> list[tuple[str, np.ndarray]]:
    """(name, RGB) of up to ``limit`` references: the split=test ``ref.png`` of the real_pair shards
    in ``source`` (all splits when none is test), else the image files in the folder ``source``."""
    from shards.reader import iter_shard, shard_paths
    from train.stage2 import dataset

    if shard_paths(source):
        try:
            shards = dataset(source, split="test")
        except FileNotFoundError:
            shards = dataset(source)
        found = []
        for shard in shards.shards:
            wanted = set(shard.keys)
            for record in iter_shard(shard.path):
                if record["__key__"] in wanted:
                    found.append((record["__key__"], record["ref.png"]))
                if len(found) >= limit:
                    return found
        return found
    files = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not files:
        raise FileNotFoundError(f"--references {source}: neither real_pair shards nor image files")
    return [(p.stem, np.asarray(Image.open(p).convert("RGB"))) for p in files[:limit]]


def write_table(table: dict, out: Path) -> None:
    """metrics.json, metrics.csv and metrics.md: one row per reference and the mean."""
    (out / "metrics.json").write_text(json.dumps(table, indent=1))
    columns = ("reference", "clip_i", "clip_t", "ap_clip_i", "face_sim", "images")
    with open(out / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(table["rows"])

    def cell(value):
        return f"{value:.2f}" if isinstance(value, float) else ("-" if value is None else str(value))

    lines = ["| reference | CLIP-I | CLIP-T | AP-CLIP-I | Face Sim. | images |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in table["rows"]]
    lines += ["", f"Face Sim.: {table['face_similarity']}. Backgrounds removed with {table['background']} "
                  f"(a person found in {100 * table['person_found']:.0f} % of generated images); CLIP: {table['clip_model']}."]
    (out / "metrics.md").write_text("\n".join(lines) + "\n")
