"""Real pairs (SerialGen §3.4): curated ``photo`` records -> the trained standardizer's reference
of each photo's person -> a caption -> the quality gate (pairs.gate) -> ``real_pair`` records:
``ref.png`` the standardized reference, ``target.jpg`` the photo's bytes exactly as curated,
``txt`` the caption, ``json`` the lineage (photo, split, checkpoint hash, captioner and prompt,
curation and gate scores). The standardizer's inference is train.standardize's
(``LoadedStandardizer`` with the ``photo`` decoder: the photo, 1 - its person mask, the pose
image of its keypoints); the captioner is curate.caption's. One worker holds the standardizer,
the captioner, the detector and the embedder (a GPU actor per GPU on Ray)."""
from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from curate.caption.config import CaptionConfig
from pairs.gate import HISTOGRAM, Embedder, GateConfig, histogram_embeddings, judge, similarities
from shards import storage
from shards.encoding import encode_png
from shards.keys import split_of
from shards.schema import REAL_PAIR
from shards.stage import Resources, Stage, StageUnavailable, rejected
from train.standardize import LoadedStandardizer, StandardizeConfig


@dataclass(frozen=True)
class PairsConfig:
    """``pairforge pairs`` (configs/pairs-300k.yaml, configs/pairs-tiny.yaml). The worker's
    resources are ``standardize.gpus/cpus/memory_mb``: the captioner runs in the same worker, on
    the same device (``caption.gpus``/``cpus`` are not used here)."""
    standardize: StandardizeConfig = field(default_factory=StandardizeConfig)
    caption: CaptionConfig = field(default_factory=lambda: CaptionConfig(backend="transformers"))
    gate: GateConfig = field(default_factory=GateConfig)
    ref_size: tuple[int, int] = (0, 0)  # (w, h) of ref.png: the whole standardized frame resized; (0, 0): the photo's size
    test_fraction: float = 0.2          # split by the photo's subject (json subject_id, else its sha256)
    sample_timeout: float = 600.0
    expected_photos: int = 0            # how many photos the job is sized for: what `pairforge plan` projects

    def check(self) -> None:
        problems = list(self.gate.problems())
        try:
            self.standardize.check()
        except ValueError as error:
            problems.append(f"standardize.{error}")
        if self.caption.model:
            try:
                self.caption.check()
            except ValueError as error:
                problems.append(f"caption.{error}")
            if self.caption.resolved_backend not in ("transformers", "vllm"):
                problems.append(f"caption.backend={self.caption.backend}: pairs caption with a model (transformers "
                                f"or vllm), or leave caption.model empty when every photo has its txt")
        if any(v < 0 for v in self.ref_size) or (0 in self.ref_size and any(self.ref_size)):
            problems.append(f"ref_size={list(self.ref_size)}: give [width, height] > 0, or [0, 0] for the photo's size")
        if not 0 <= self.test_fraction < 1 or self.expected_photos < 0:
            problems.append("test_fraction must be in [0, 1) and expected_photos >= 0")
        if problems:
            raise ValueError("; ".join(problems))


class PairsStage(Stage):
    """``photo`` records (work items naming them) -> ``real_pair`` records or rejects with reasons."""
    name = "pairs"
    schema = REAL_PAIR
    decodes = frozenset({"mask.png", "json"})  # image.jpg arrives as its bytes: target.jpg is them, untouched
    packages = ("torch", "diffusers", "transformers", "mediapipe")

    def __init__(self, config: PairsConfig, identity: dict, caption_identity: dict | None):
        """``identity``: the checkpoint's (read_identity); ``caption_identity``: the checked caption
        model (curate.caption.models.model_identity), None when photos bring their own txt."""
        self.config, self.identity, self.caption_identity = config, identity, caption_identity
        self.batch_size, self.sample_timeout = config.standardize.batch_size, config.sample_timeout
        s = config.standardize
        self.resources = Resources(cpus=s.cpus, gpus=s.gpus, memory_mb=s.memory_mb)
        self.standard_pose = np.asarray(identity["standard_pose"], np.float32)
        self.captioner_lineage = {**caption_identity, "prompt": config.caption.prompts.real_photo} \
            if caption_identity else None
        self._standardizer = LoadedStandardizer(s, "photo", identity)
        self._captioner = self._detector = self._embedder = None
        self.seconds = Counter()  # wall seconds per phase (standardize, caption, gate), for plan's figures

    def setup(self) -> None:
        from curate.people import make_detector

        self._standardizer.load(self.name)
        if self.caption_identity:
            from curate.caption.models import open_captioner
            try:
                self._captioner = open_captioner(self.config.caption, self.caption_identity)
            except Exception as error:  # checked before the job: this machine cannot run it
                raise StageUnavailable(f"pairs: caption model {self.config.caption.model} does not load here: "
                                       f"{type(error).__name__}: {error}") from None
        gate = self.config.gate
        if gate.needs_detector:
            self._detector = make_detector(gate.detector)
        if "identity" in gate.checks:
            device = self._standardizer.device
            self._embedder = histogram_embeddings if gate.embedder == HISTOGRAM \
                else Embedder.load(gate.embedder, device) if gate.embedder \
                else Embedder(self._standardizer.frozen.image_encoder, device)

    def teardown(self) -> None:
        self._standardizer.unload()
        for held in (self._captioner, self._detector):
            if held is not None:
                held.close()
        self._captioner = self._detector = self._embedder = None

    def process_batch(self, items: list[dict]) -> list[dict]:
        from shards.reader import decode_member

        out, photos, by_key = {}, {}, {item["__key__"]: item for item in items}
        for item in items:
            key, record = item["__key__"], item["inputs"][0]
            try:
                photos[key] = {**record, "image.jpg": decode_member("image.jpg", record["image.jpg"])}
            except Exception as error:  # a photo that does not decode is a reject; the batch goes on
                out[key] = rejected(key, f"input: image.jpg: {type(error).__name__}: {error}")
        crop = not any(self.config.ref_size)
        started = time.perf_counter()
        done, failed = self._standardizer.run(photos, crop=crop) if photos else ({}, {})
        self.seconds["standardize"] += time.perf_counter() - started
        out.update({key: rejected(key, reason) for key, reason in failed.items()})
        references = {key: image if crop else _resized(image, self.config.ref_size) for key, (image, _) in done.items()}
        started = time.perf_counter()
        captions = self._captions({key: photos[key] for key in done})
        self.seconds["caption"] += time.perf_counter() - started
        started = time.perf_counter()
        kept = [key for key in done if isinstance(captions[key], str)]
        out.update({key: captions[key] for key in done if key not in kept})
        scores = similarities(self._embedder, [photos[k]["image.jpg"] for k in kept],
                              [photos[k]["mask.png"] for k in kept], [references[k] for k in kept]) \
            if self._embedder is not None and kept else [None] * len(kept)
        for key, similarity in zip(kept, scores):
            reason, gate_scores = judge(self.config.gate, references[key], self.standard_pose, self._detector,
                                        similarity)
            if reason and self.config.gate.enforce:
                out[key] = rejected(key, reason, gate=gate_scores, source=photos[key]["json"].get("source"))
            else:
                out[key] = self._record(by_key[key], references[key], captions[key], done[key][1], gate_scores,
                                        reason)
        self.seconds["gate"] += time.perf_counter() - started
        return [out[item["__key__"]] for item in items]

    def _captions(self, photos: dict[str, dict]) -> dict:
        """Key -> the photo's own txt, else the captioner's caption, or a reject."""
        from curate.caption.models import prepare_image

        out, pending = {}, []
        for key, record in photos.items():
            if record.get("txt"):
                out[key] = bytes(record["txt"]).decode("utf-8").strip()
            elif self._captioner is None:
                out[key] = rejected(key, "caption: the photo has no txt and caption.model is empty; set "
                                         "caption.model (e.g. Qwen/Qwen2-VL-2B-Instruct) or caption the photos first")
            else:
                try:
                    pending.append((key, prepare_image(record["image.jpg"], self.config.caption.min_pixels,
                                                       self.config.caption.max_pixels)))
                except Exception as error:  # an image the processor refuses is a reject
                    out[key] = rejected(key, f"caption: image refused: {type(error).__name__}: {error}")
        if pending:
            prompt = self.config.caption.prompts.real_photo
            texts = self._captioner.caption([image for _, image in pending], [prompt] * len(pending))
            out.update({key: text for (key, _), text in zip(pending, texts)})
        return out

    def _record(self, item: dict, reference: np.ndarray, caption: str, seed: int, gate_scores: dict,
                gate_failed: str | None) -> dict:
        # Names, not paths, as in train.standardize: a record's bytes do not depend on where the job ran.
        record = item["inputs"][0]
        meta = record["json"]
        s = self.config.standardize
        # the split follows the person (json subject_id), else the photo's bytes: never where the photo lies
        subject = meta.get("subject_id") or meta.get("sha256") or meta["source"]
        lineage = {"schema": REAL_PAIR.tag, "photo_id": item["__key__"], "photo_source": meta["source"],
                   "photo_sha256": meta.get("sha256"), "photo_shard": storage.name(item["source_shard"]),
                   "split": meta.get("split") or split_of(subject, self.config.test_fraction),
                   "checkpoint": storage.name(s.checkpoint), "checkpoint_sha256": self.identity["weights_sha256"],
                   "standardizer": {"steps": s.steps, "guidance_scale": s.guidance_scale, "seed": seed,
                                    "resolution": self.identity["resolution"]},
                   "caption": _photo_captioner(record) if record.get("txt")
                   else {"from": "model", **self.captioner_lineage},
                   "curation": meta.get("scores", {}), "gate": gate_scores,
                   "gate_checks": list(self.config.gate.checks), "gate_failed": gate_failed}
        return {"__key__": item["__key__"], "ref.png": encode_png(reference), "target.jpg": bytes(record["image.jpg"]),
                "txt": caption.encode(), "json": json.dumps(lineage, sort_keys=True).encode()}


def _photo_captioner(record: dict) -> dict:
    """The lineage of a photo's own caption: ``pairforge caption``'s (model, prompt) when it wrote it."""
    written = json.loads(record["caption.json"]).get("captioner", {}) if record.get("caption.json") else {}
    return {"from": "photo", **written}


def _resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if tuple(size) == image.shape[1::-1]:
        return image
    return np.asarray(Image.fromarray(image).resize(tuple(size), Image.BICUBIC))


def with_checkpoint(config: PairsConfig, checkpoint: str, sha256: str) -> PairsConfig:
    """The config with the checkpoint's resolved path and weights hash: a new checkpoint is a new config."""
    return dataclasses.replace(config, standardize=dataclasses.replace(
        config.standardize, checkpoint=checkpoint, checkpoint_sha256=sha256))
