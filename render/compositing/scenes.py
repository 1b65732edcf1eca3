"""Multi-subject scenes for AnyStory's router: 2-4 rendered characters composited into one image
back to front, with exact instance masks after occlusion (each pixel belongs to the front-most
subject covering it, so masks are disjoint and cover exactly the union of the subjects' alphas)
and each subject's segmented reference image -> ``router_sample`` records."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from render.compositing.backgrounds import draw_background
from render.compositing.composite import CompositeConfig, Placement, alpha_box, composite
from render.compositing.stage import OnBackgrounds
from shards.encoding import encode_jpeg, encode_png
from shards.keys import sample_seed
from shards.reader import iter_shard
from shards.schema import ROUTER_SAMPLE
from shards.stage import each_or_reject


@dataclass(frozen=True)
class SceneConfig:
    seed: int = 0
    scenes: int = 64
    scenes_per_shard: int = 32
    subjects: tuple[int, int] = (2, 4)
    height_fraction: tuple[float, float] = (0.35, 0.75)  # far .. near subject height / frame height
    min_visible: float = 0.15   # a subject must keep this share of its silhouette visible
    backgrounds: str = "procedural"
    procedural_count: int = 10_000
    composite: CompositeConfig = field(default_factory=lambda: CompositeConfig(shadow=0.3))
    batch_size: int = 8
    max_background_tries: int = 8

    def check(self) -> None:
        lo, hi = self.subjects
        if not 2 <= lo <= hi <= 4:
            raise ValueError("subjects must be [lo, hi] within 2..4")
        if self.scenes < 1 or self.scenes_per_shard < 1 or self.batch_size < 1:
            raise ValueError("scenes, scenes_per_shard and batch_size must be >= 1")


class NotEnoughSubjects(ValueError):
    """Too few distinct characters to compose scenes from."""


def compose_scene(sources: list[np.ndarray], background: np.ndarray, rng: np.random.Generator,
                  config: SceneConfig, tries: int = 20) -> dict:
    """``sources`` (RGBA renders) -> {"image", "masks" (visible instance masks, in draw order),
    "placements", "depths"}; raises ValueError if no layout keeps every subject visible enough."""
    h, w = background.shape[:2]
    lo, hi = config.height_fraction
    for _ in range(tries):
        n = len(sources)
        depths = np.sort(rng.uniform(0, 1, n))  # back (0) to front (1): drawn in this order
        slots = rng.permutation(n)
        image, alphas, placements = background, [], []
        for subject, depth in zip(sources, depths):
            x0, y0, x1, y1 = alpha_box(subject[..., 3])
            scale = (lo + (hi - lo) * depth) * h / (y1 - y0)
            scale = min(scale, 0.9 * w / (x1 - x0))
            centre_x = (slots[len(alphas)] + 0.5) / n * w + rng.uniform(-0.25, 0.25) * w / n
            foot_y = (0.72 + 0.26 * depth) * h
            ox = int(np.clip(centre_x - (x0 + x1) / 2 * scale, -x0 * scale, w - x1 * scale))
            oy = int(np.clip(foot_y - y1 * scale, -y0 * scale, h - y1 * scale))
            placement = Placement(round(float(scale), 6), (ox, oy))
            out = composite(subject, image, placement, config.composite)
            image = out["image"]
            alphas.append(out["alpha"])
            placements.append(placement)
        masks, covered = [], np.zeros((h, w), bool)
        for alpha in reversed(alphas):  # front to back: a pixel belongs to the nearest subject
            present = alpha > 0
            masks.insert(0, present & ~covered)
            covered |= present
        if all(m.sum() >= config.min_visible * (a > 0).sum() for m, a in zip(masks, alphas)):
            return {"image": image, "masks": masks, "placements": placements, "depths": depths.tolist()}
    raise ValueError(f"no layout in {tries} tries keeps every subject {config.min_visible:.0%} visible")


def plan_scenes(pairs_dir, config: SceneConfig) -> list[list[dict]]:
    """Scenes as work items: each picks 2-4 pairs of distinct characters of one split."""
    from shards.reader import shard_paths
    by_split: dict[str, dict[str, list]] = {}
    for path in shard_paths(pairs_dir):
        for record in iter_shard(path, decode=False):
            meta = json.loads(record["json"])
            by_split.setdefault(meta["split"], {}).setdefault(meta["character_id"], []).append(
                [str(path), record["__key__"]])
    usable = sorted(s for s, chars in by_split.items() if len(chars) >= config.subjects[0])
    if not usable:
        raise NotEnoughSubjects(f"{pairs_dir}: no split holds {config.subjects[0]} or more characters, so no "
                                "multi-subject scene can be made; render more characters")
    items = []
    for index in range(config.scenes):
        key = f"s{index:06d}"
        rng = np.random.default_rng(sample_seed(config.seed, "scene-" + key))
        split = usable[int(rng.integers(len(usable)))]
        characters = sorted(by_split[split])
        n = int(rng.integers(config.subjects[0], min(config.subjects[1], len(characters)) + 1))
        chosen = rng.choice(len(characters), size=n, replace=False)
        picks = [by_split[split][characters[c]][int(rng.integers(len(by_split[split][characters[c]])))]
                 for c in chosen]
        items.append({"__key__": key, "inputs": picks, "split": split, "seed": sample_seed(config.seed, key)})
    return [items[i:i + config.scenes_per_shard] for i in range(0, len(items), config.scenes_per_shard)]


class RouterSceneStage(OnBackgrounds):
    """Work items name the 2-4 pair records of a scene (``inputs``); the runner reads them."""
    name = "router-scenes"
    schema = ROUTER_SAMPLE

    def process_batch(self, items: list[dict]) -> list[dict]:
        return each_or_reject(self.name, items, self._scene)

    def _scene(self, item: dict) -> dict:
        pairs = item["inputs"]
        sources = [p["src.png"] for p in pairs]
        rng = np.random.default_rng(item["seed"])
        size = (sources[0].shape[1], sources[0].shape[0])
        background, name, skipped = draw_background(self._backgrounds, rng, size, self.config.max_background_tries)
        scene = compose_scene(sources, background, rng, self.config)
        subjects = [{"pair_key": p["__key__"], "character_id": p["json"]["character_id"], "depth": round(d, 4),
                     "placement": {"scale": pl.scale, "offset": list(pl.offset)}}
                    for p, d, pl in zip(pairs, scene["depths"], scene["placements"])]
        meta = {"schema": ROUTER_SAMPLE.tag, "seed": item["seed"], "split": item["split"], "subjects": subjects,
                "background": {"source": self.config.backgrounds, "name": name, "skipped": skipped}}
        record = {"__key__": item["__key__"], "image.jpg": encode_jpeg(scene["image"], self.config.composite.jpeg_quality),
                  "txt": f"a scene with {len(pairs)} characters".encode(),
                  "json": json.dumps(meta, sort_keys=True).encode()}
        for i, (source, mask) in enumerate(zip(sources, scene["masks"])):
            x0, y0, x1, y1 = alpha_box(source[..., 3])
            record[f"subj{i}.png"] = encode_png(np.ascontiguousarray(source[y0:y1, x0:x1]))
            record[f"mask{i}.png"] = encode_png(mask.astype(np.uint8) * 255)
        return record
