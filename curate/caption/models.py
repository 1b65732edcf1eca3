"""Qwen2-VL / Qwen2.5-VL captioners: the transformers path (messages -> chat template ->
qwen_vl_utils.process_vision_info -> processor -> generate -> batch_decode, batched with left
padding, greedy) and vLLM's offline ``LLM.generate`` for throughput on GPU machines. Both take
images already decoded and resized (``prepare_image``, on the worker's CPU threads), and both
are checked before any work (``model_identity``): a missing folder, a hub id that cannot be
fetched, or a model that is not a Qwen VL stop the job with a message saying what to change."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from curate.caption.config import PATCH, CaptionConfig

VL_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
VLLM_MISSING = "backend vllm needs vLLM, which is not installed: pip install 'pairforge[vllm]' (Linux, CUDA GPU)"


class CaptionModelError(ValueError):
    """The configured model cannot caption (missing, unreachable, not a VLM, vLLM absent)."""


def _is_local(model: str) -> bool:
    """A folder, or meant as one: an absolute, home or relative path, or more than one slash
    (a hub id is ``owner/name``)."""
    return Path(model).expanduser().exists() or model.startswith(("/", ".", "~")) or model.count("/") > 1


def _folder_hash(folder: Path) -> str:
    """A hash of a local model's files (config, tokenizer, weights), so captions from retrained
    weights in the same folder are neither cached nor recorded as the old ones."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def model_identity(config: CaptionConfig) -> dict:
    """What identifies the captioner's output, checked before any work: the model (with its
    commit or file hash), its settings and the backend. Raises CaptionModelError."""
    backend = config.resolved_backend
    if backend == "vllm":
        import importlib.util
        if importlib.util.find_spec("vllm") is None:
            raise CaptionModelError(VLLM_MISSING)
    from transformers import AutoConfig

    model = config.model
    if _is_local(model):
        folder = Path(model).expanduser()
        if not (folder / "config.json").is_file():
            raise CaptionModelError(f"model {model}: {'no such folder' if not folder.exists() else 'no config.json in it'}"
                                    f"; give a folder written by save_pretrained, or a hub id such as "
                                    f"Qwen/Qwen2-VL-2B-Instruct")
        model_config, revision, model_hash = AutoConfig.from_pretrained(folder), "", _folder_hash(folder)
    else:
        try:
            model_config = AutoConfig.from_pretrained(model, revision=config.revision)
        except OSError as error:
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
            why = ("HF_HUB_OFFLINE is set, so it cannot be downloaded: download it where there is a network "
                   f"(hf download {model}) or give a local folder") if offline else f"{error}"
            raise CaptionModelError(f"model {model}: not in the local Hugging Face cache; {why}") from None
        revision, model_hash = config.revision, getattr(model_config, "_commit_hash", None) or ""
    if model_config.model_type not in VL_MODEL_TYPES:
        raise CaptionModelError(f"model {model} is a {model_config.model_type!r} model, not a vision-language model "
                                f"the captioner runs ({', '.join(VL_MODEL_TYPES)}); use e.g. Qwen/Qwen2-VL-2B-Instruct")
    return {"backend": backend, "model": model, "revision": revision, "hash": model_hash,
            "model_type": model_config.model_type, "dtype": config.dtype,
            "min_pixels": config.min_pixels, "max_pixels": config.max_pixels,
            "generation": {"do_sample": False, "max_new_tokens": config.generation.max_new_tokens,
                           "repetition_penalty": config.generation.repetition_penalty}}


def prepare_image(image, min_pixels: int, max_pixels: int):
    """A decoded image (uint8 array, RGB or RGBA) -> the RGB PIL image at the size the processor
    works at (both sides multiples of 28, pixels within the budget). Transparent renders go on
    white. Raises ValueError for an image the processor refuses (e.g. an extreme aspect ratio)."""
    import numpy as np
    from PIL import Image
    from qwen_vl_utils import smart_resize

    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        image = (image[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    picture = Image.fromarray(image).convert("RGB")
    height, width = smart_resize(picture.height, picture.width, factor=PATCH, min_pixels=min_pixels,
                                 max_pixels=max_pixels)
    return picture.resize((width, height), Image.BICUBIC)


def _messages(image, prompt: str, identity: dict) -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "image", "image": image, "min_pixels": identity["min_pixels"], "max_pixels": identity["max_pixels"]},
        {"type": "text", "text": prompt}]}]


def _torch_settings(dtype: str, device: str):
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return getattr(torch, dtype), device


class TransformersCaptioner:
    """Qwen2-VL on transformers, in this process's device."""

    def __init__(self, config: CaptionConfig, identity: dict):
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging

        logging.disable_progress_bar()
        self.identity, self.generation = identity, config.generation
        source = {"pretrained_model_name_or_path": str(Path(config.model).expanduser()) if _is_local(config.model)
                  else config.model, **({"revision": identity["revision"]} if identity["revision"] else {})}
        self.dtype, self.device = _torch_settings(config.dtype, config.device)
        self.processor = AutoProcessor.from_pretrained(**source)
        self.processor.tokenizer.padding_side = "left"  # generation appends on the right
        self.model = AutoModelForImageTextToText.from_pretrained(**source, dtype=self.dtype).to(self.device).eval()

    def caption(self, images: list, prompts: list[str]) -> list[str]:
        import torch
        from qwen_vl_utils import process_vision_info

        conversations = [_messages(image, prompt, self.identity) for image, prompt in zip(images, prompts)]
        texts = [self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        vision, _ = process_vision_info(conversations)
        inputs = self.processor(text=texts, images=vision, padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, temperature=None, top_p=None, top_k=None,
                                      max_new_tokens=self.generation.max_new_tokens,
                                      repetition_penalty=self.generation.repetition_penalty)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]

    def close(self) -> None:
        del self.model


class VllmCaptioner:
    """Qwen2-VL on vLLM's offline engine (``LLM.generate``) in this worker: continuous batching
    and paged attention for throughput on a GPU; the same prompts and greedy settings."""

    def __init__(self, config: CaptionConfig, identity: dict):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as error:
            raise CaptionModelError(f"{VLLM_MISSING} ({error})") from None
        from transformers import AutoProcessor

        self.identity = identity
        revision = identity["revision"] or None
        self.processor = AutoProcessor.from_pretrained(config.model, revision=revision)
        self.llm = LLM(model=config.model, revision=revision, dtype=config.dtype, seed=0,
                       max_model_len=config.vllm.max_model_len,
                       gpu_memory_utilization=config.vllm.gpu_memory_utilization,
                       limit_mm_per_prompt={"image": 1},
                       mm_processor_kwargs={"min_pixels": config.min_pixels, "max_pixels": config.max_pixels})
        self.sampling = SamplingParams(temperature=0.0, max_tokens=config.generation.max_new_tokens,
                                       repetition_penalty=config.generation.repetition_penalty)

    def caption(self, images: list, prompts: list[str]) -> list[str]:
        requests = [{"prompt": self.processor.apply_chat_template(_messages(image, prompt, self.identity),
                                                                  tokenize=False, add_generation_prompt=True),
                     "multi_modal_data": {"image": image}} for image, prompt in zip(images, prompts)]
        outputs = self.llm.generate(requests, self.sampling, use_tqdm=False)
        return [output.outputs[0].text.strip() for output in outputs]

    def close(self) -> None:
        del self.llm


def open_captioner(config: CaptionConfig, identity: dict):
    """The model captioner that ``identity`` names (transformers or vllm)."""
    return (VllmCaptioner if identity["backend"] == "vllm" else TransformersCaptioner)(config, identity)

