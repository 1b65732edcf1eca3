"""CompositeStage: ``synthetic_pair`` shards -> ``composited_pair`` records, each source placed on a
background drawn by its seed, at the render's own size (``std.png`` is carried over byte for byte:
its face sits on fixed pixels). Work items name their input record; the runner reads it and
decodes only the source image and json, so std.png arrives as bytes and is passed on as they
are. A background that cannot be read is skipped (with its reason in the record) for the next one."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from render.compositing.backgrounds import draw_background, open_backgrounds
from render.compositing.composite import CompositeConfig, composite_sample
from shards.encoding import encode_jpeg, encode_png
from shards.keys import sample_seed
from shards.schema import COMPOSITED_PAIR
from shards.stage import Resources, Stage, each_or_reject


@dataclass(frozen=True)
class CompositeJobConfig:
    seed: int = 0
    backgrounds: str = "procedural"     # "procedural" or a folder of images
    procedural_count: int = 10_000
    composite: CompositeConfig = field(default_factory=CompositeConfig)
    batch_size: int = 16
    max_background_tries: int = 8

    def check(self) -> None:
        if self.procedural_count < 1 or self.max_background_tries < 1 or self.batch_size < 1:
            raise ValueError("procedural_count, max_background_tries and batch_size must be >= 1")
        lo, hi = self.composite.height_fraction
        if not 0 < lo <= hi:
            raise ValueError("composite.height_fraction must be 0 < lo <= hi")


def plan_composite_items(input_dir: Path, seed: int) -> list[list[dict]]:
    """One output shard per input shard, same order; each item names its input record."""
    from shards import storage
    from shards.reader import shard_paths
    shards = []
    for path in shard_paths(input_dir):  # paths or URLs
        manifest = json.loads(storage.read_bytes(path.removesuffix(".tar") + ".json"))
        shards.append([{"__key__": key, "inputs": [[str(path), key]], "seed": sample_seed(seed, "composite-" + key)}
                       for key in manifest["keys"]])
    return shards


class OnBackgrounds(Stage):
    """What the stages that place source renders on backgrounds share (this one and the router
    scenes): the source image and json decoded, the backgrounds opened once per worker, and the
    same resources, so that consecutive stages of a job run on the same Ray workers."""
    resources = Resources(cpus=1.0, memory_mb=1000)
    decodes = frozenset({"src.png", "json"})
    packages = ("opencv-python-headless",)

    def __init__(self, config):
        self.config = config
        self.batch_size = config.batch_size
        self._backgrounds = None

    def setup(self) -> None:
        self._backgrounds = open_backgrounds(self.config)


class CompositeStage(OnBackgrounds):
    name = "composite"
    schema = COMPOSITED_PAIR

    def process_batch(self, items: list[dict]) -> list[dict]:
        return each_or_reject(self.name, items, self._composite)

    def _composite(self, item: dict) -> dict:
        pair = item["inputs"][0]
        meta, rgba = pair["json"], pair["src.png"]
        rng = np.random.default_rng(item["seed"])
        background, name, skipped = draw_background(self._backgrounds, rng, (rgba.shape[1], rgba.shape[0]),
                                                    self.config.max_background_tries)
        result = composite_sample(rgba, meta["src"]["keypoints"], background, rng, self.config.composite,
                                  meta["src"].get("in_frame"))
        placement, keypoints = result["placement"], result["keypoints"]
        out_meta = {
            "schema": COMPOSITED_PAIR.tag, "pair_key": item["__key__"], "seed": item["seed"],
            **{k: meta[k] for k in ("character_id", "pose_id", "view_id", "split", "renderer")},
            "background": {"source": self.config.backgrounds, "name": name, "skipped": skipped},
            "placement": {"scale": placement.scale, "offset": list(placement.offset),
                          "harmonize": self.config.composite.harmonize, "shadow": self.config.composite.shadow},
            "src": {"keypoints": np.round(keypoints, 2).tolist(), "pair_spec": meta["src"]["spec"],
                    **({"in_frame": result["in_frame"]} if result["in_frame"] is not None else {})},
            "std": meta["std"],
        }
        return {
            "__key__": item["__key__"],
            "src.jpg": encode_jpeg(result["image"], self.config.composite.jpeg_quality),
            "src_bgmask.png": encode_png(result["bg_mask"]),
            "src_pose.png": encode_png(result["pose_image"]),
            "std.png": pair["std.png"],
            "json": json.dumps(out_meta, sort_keys=True).encode(),
        }
