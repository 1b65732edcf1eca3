"""CaptionStage: records of any kind -> the same records with a caption (``txt``, and the
captioner's lineage as ``caption.json``; every other member copied byte for byte), or sidecar
``caption`` records keyed alike. One output shard per input shard.

Where the work runs: the runner hands the stage raw members (it decodes nothing); on the worker,
a pool of CPU threads (as many as the stage's ``cpus``) looks each image up in the cache by its
bytes, then decodes and resizes the misses (PIL releases the GIL), and the GPU (``gpus``, one
device per Ray actor) only generates. A hit never reaches the model; an image that does not
decode, or that the processor refuses, is a reject with its reason."""
from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from curate.caption.cache import CaptionCache, caption_key
from curate.caption.config import CaptionConfig
from curate.caption.metadata import SCHEMA_VERSION, CharacterParams, metadata_caption
from shards.schema import CAPTION, schema_named
from shards.stage import Resources, Stage, StageUnavailable, each_or_reject, rejected

# Record kind -> the member captioned and the prompt (a field of config.prompts). ``photo`` and
# ``real_pair`` are the curated photos and real pairs of the design (docs/architecture.md).
KINDS = {
    "synthetic_pair": ("src.png", "synthetic_character"),
    "composited_pair": ("src.jpg", "synthetic_character"),
    "router_sample": ("image.jpg", "multi_subject_scene"),
    "multiview": ("view0.png", "multi_view_object"),
    "photo": ("image.jpg", "real_photo"),
    "real_pair": ("target.jpg", "real_photo"),
}
MODEL_PACKAGES = {"transformers": ("torch", "transformers", "qwen-vl-utils"), "vllm": ("torch", "vllm")}


def plan_caption_items(input_dir: str) -> tuple[str, list[list[dict]]]:
    """(the record kind, one shard of work items per input shard); each item names its record."""
    from shards import storage
    from shards.reader import shard_paths

    kinds, shards = set(), []
    for path in shard_paths(input_dir):  # paths or URLs
        manifest = json.loads(storage.read_bytes(path.removesuffix(".tar") + ".json"))
        kinds.add(manifest["schema"]["name"])
        shards.append([{"__key__": key, "inputs": [[path, key]]} for key in manifest["keys"]])
    if len(kinds) > 1:
        raise ValueError(f"{input_dir} holds shards of several kinds ({', '.join(sorted(kinds))}); caption one at a time")
    kind = kinds.pop() if kinds else ""
    if shards and kind not in KINDS:
        raise ValueError(f"{input_dir}: cannot caption {kind!r} records; captioned kinds: {', '.join(KINDS)}")
    return kind, shards


class CaptionStage(Stage):
    name = "caption"
    decodes = frozenset()  # members arrive as bytes: passed on untouched; images decoded on the worker's threads

    def __init__(self, config: CaptionConfig, kind: str, identity: dict | None, cache_dir: str | None = None,
                 characters_dir: str | None = None):
        """``identity``: the checked model (``models.model_identity``), None for metadata captions."""
        self.config, self.kind, self.identity = config, kind, identity
        self.member, prompt = KINDS[kind]
        self.prompt = getattr(config.prompts, prompt)
        self.schema = CAPTION if config.output == "sidecar" else schema_named(kind)
        self.batch_size, self.sample_timeout = config.batch_size, config.sample_timeout
        # Metadata captions need no model: the compositing stages' ask, so a demo reuses their workers.
        self.resources = Resources(cpus=config.cpus, gpus=config.gpus, memory_mb=config.memory_mb) if identity \
            else Resources(cpus=config.cpus, memory_mb=1000)
        self.packages = MODEL_PACKAGES[identity["backend"]] if identity else ()
        self.lineage = {**identity, "prompt": self.prompt} if identity else {"backend": "metadata",
                                                                             "version": SCHEMA_VERSION}
        self.cache_dir, self.characters_dir = cache_dir, characters_dir
        self.seconds = Counter()  # wall seconds spent preparing images and generating, for the benchmark
        self.captioner = self._threads = self._cache = self._characters = None

    def setup(self) -> None:
        if self.identity is None:
            self._characters = CharacterParams(self.characters_dir)
            return
        from curate.caption.models import open_captioner

        self._threads = ThreadPoolExecutor(max(1, int(self.resources.cpus)), thread_name_prefix="caption-prepare")
        self._cache = CaptionCache(self.cache_dir) if self.cache_dir else None
        try:
            self.captioner = open_captioner(self.config, self.identity)
        except Exception as error:  # the model was checked before the job: this machine cannot run it
            raise StageUnavailable(f"caption: model {self.config.model} does not load here: "
                                   f"{type(error).__name__}: {error}") from None

    def teardown(self) -> None:
        if self.captioner is not None:
            self.captioner.close()
        if self._threads is not None:
            self._threads.shutdown()
        self.captioner = self._threads = None

    def process_batch(self, items: list[dict]) -> list[dict]:
        if self.identity is None:
            return each_or_reject(self.name, items, lambda item: self._output(item, metadata_caption(
                self.kind, json.loads(item["inputs"][0]["json"]), self._characters)))
        captions = self._model_captions(items)
        return [self._output(item, captions[item["__key__"]]) if isinstance(captions[item["__key__"]], str)
                else captions[item["__key__"]] for item in items]

    def _model_captions(self, items: list[dict]) -> dict:
        """Key -> caption (from the cache, else from the model) or a reject."""
        out, pending = {}, []
        started = time.perf_counter()
        for item in items:
            key, data = item["__key__"], item["inputs"][0].get(self.member)
            if data is None:
                out[key] = rejected(key, f"caption: the record has no {self.member}")
                continue
            cache_key = caption_key(data, self.identity, self.prompt)
            cached = self._cache.get(cache_key) if self._cache else None
            if cached is not None:
                out[key] = cached
            else:
                pending.append((key, cache_key, self._threads.submit(self._prepare, data)))
        ready = []
        for key, cache_key, image in pending:
            try:
                ready.append((key, cache_key, image.result()))
            except Exception as error:  # one image the processor refuses is a reject, not a failed batch
                out[key] = rejected(key, f"caption: {self.member} refused: {type(error).__name__}: {error}")
        self.seconds["prepare"] += time.perf_counter() - started
        if ready:
            started = time.perf_counter()
            captions = self.captioner.caption([image for _, _, image in ready], [self.prompt] * len(ready))
            self.seconds["generate"] += time.perf_counter() - started
            for (key, cache_key, _), caption in zip(ready, captions):
                if self._cache:
                    self._cache.put(cache_key, caption)
                out[key] = caption
        return out

    def _prepare(self, data: bytes):
        from curate.caption.models import prepare_image
        from shards.reader import decode_member

        return prepare_image(decode_member(self.member, data), self.config.min_pixels, self.config.max_pixels)

    def _output(self, item: dict, caption: str) -> dict:
        record = item["inputs"][0]
        if self.config.output == "sidecar":
            meta = {"schema": CAPTION.tag, "kind": self.kind, "captioner": self.lineage}
            return {"__key__": item["__key__"], "txt": caption.encode(), "json": json.dumps(meta, sort_keys=True).encode()}
        members = {name: data for name, data in record.items() if not name.startswith("__")}
        return {**members, "__key__": item["__key__"], "txt": caption.encode(),
                "caption.json": json.dumps({"captioner": self.lineage}, sort_keys=True).encode()}
