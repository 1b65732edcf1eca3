"""Multi-view object renders for AnyStory's subject encoder: any mesh asset (.glb .gltf .obj .ply
.stl .fbx .blend) seen from ``views`` cameras on a ring at a fixed elevation, transparent
background, one ``multiview`` record per object with every camera in its json. Blender renders
them (render.backends.blender_backend); an asset that cannot be imported becomes a reject."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from render.backends.settings import OBJECT_SUFFIXES
from render.backends.settings import BlenderSettings
from shards.encoding import encode_png
from render.geometry import focal_px, look_at
from render.spec import LightSpec
from shards.keys import sample_seed, split_of
from shards.schema import MULTIVIEW
from shards.stage import Resources, Stage, each_or_reject

LIGHTS = (LightSpec(-35.0, 35.0, 3.0), LightSpec(40.0, 10.0, 1.2))  # key and fill, relative to each camera


@dataclass(frozen=True)
class MultiviewConfig:
    seed: int = 0
    objects: str = ""                 # a folder of mesh assets
    views: int = 7
    elevation_deg: float = 20.0
    random_start: bool = True         # turn each object's ring by a seeded angle (views still evenly spaced)
    resolution: tuple[int, int] = (512, 512)
    focal_mm: float = 50.0
    fill: float = 0.85                # the object's bounding sphere spans this much of the shorter side
    ambient: float = 0.35
    blender: BlenderSettings = field(default_factory=BlenderSettings)
    samples_per_shard: int = 32
    batch_size: int = 4
    test_fraction: float = 0.2
    png_compress_level: int = 1

    def check(self) -> None:
        problems = self.blender.check()
        if not self.objects:
            problems.append("objects: give a folder of mesh assets (--objects DIR)")
        if not 1 <= self.views <= 64:
            problems.append("views must be 1..64")
        if not -89 <= self.elevation_deg <= 89:
            problems.append("elevation_deg must be within -89..89")
        if not 0 < self.fill <= 1:
            problems.append("fill must be within 0..1")
        if min(self.samples_per_shard, self.batch_size) < 1:
            problems.append("samples_per_shard and batch_size must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))


def object_files(config: MultiviewConfig) -> list[str]:
    folder = Path(config.objects)
    if not folder.is_dir():
        raise FileNotFoundError(f"objects: {folder} is not a folder of mesh assets")
    files = sorted(str(p.resolve()) for p in folder.iterdir() if p.suffix.lower() in OBJECT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"objects: no {'/'.join(OBJECT_SUFFIXES)} files in {folder}")
    return files


def plan_objects(config: MultiviewConfig, files: list[str]) -> list[dict]:
    items = []
    for index, path in enumerate(files):
        key = f"o{index:06d}"
        items.append({"__key__": key, "object_file": path, "object_id": Path(path).stem,
                      "seed": sample_seed(config.seed, key)})
    return items


def ring_cameras(config: MultiviewConfig, lo: np.ndarray, hi: np.ndarray, seed: int) -> list[dict]:
    """Evenly spaced cameras on a ring around the bounding box centre, all framing its bounding
    sphere to ``fill`` of the shorter image side."""
    width, height = config.resolution
    fpx = focal_px(config.focal_mm, height)
    centre, radius = (lo + hi) / 2, max(float(np.linalg.norm(hi - lo)) / 2, 1e-6)
    half = config.fill * min(width, height) / 2
    distance = radius * np.sqrt(1.0 + (fpx / half) ** 2)  # the sphere's outline projects to ``half`` px
    start = float(np.random.default_rng(seed).uniform(0, 360)) if config.random_start else 0.0
    elevation = np.radians(config.elevation_deg)
    cameras = []
    for i in range(config.views):
        azimuth = (start + 360.0 * i / config.views) % 360.0
        a = np.radians(azimuth)
        direction = np.array([np.sin(a) * np.cos(elevation), np.sin(elevation), np.cos(a) * np.cos(elevation)])
        cameras.append({"azimuth_deg": round(azimuth, 4), "elevation_deg": config.elevation_deg,
                        "distance": round(float(distance), 6), "pose": look_at(centre + direction * distance, centre),
                        "focal_px": fpx})
    return cameras


class MultiviewStage(Stage):
    name = "multiview"
    schema = MULTIVIEW
    packages = ("bpy",)

    def __init__(self, config: MultiviewConfig, log_dir: str | None = None):
        self.config = config
        self.resources = Resources(cpus=2.0, gpus=config.blender.gpus_per_worker, memory_mb=2000)
        self.batch_size = config.batch_size
        # Blender requests have their own deadline (a hung worker is replaced); this is the backstop.
        self.sample_timeout = 3 * config.blender.timeout_s * config.blender.tries * config.views + 60
        self.log_dir = log_dir
        self.backend = None

    def setup(self) -> None:
        from render.backends import make_backend
        self.backend = make_backend("blender", self.config.blender, self.log_dir)

    def teardown(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def process_batch(self, items: list[dict]) -> list[dict]:
        return each_or_reject(self.name, items, self._object)

    def _object(self, item: dict) -> dict:
        config = self.config
        lo, hi = self.backend.open_object(item["object_file"])
        record = {"__key__": item["__key__"]}
        views = []
        for i, camera in enumerate(ring_cameras(config, lo, hi, item["seed"])):
            result = self.backend.render_view(camera["pose"], camera["focal_px"], config.resolution, LIGHTS,
                                              config.ambient)
            if not result["mask"].any():
                raise ValueError(f"view {i} is empty: the object is not in view")
            record[f"view{i}.png"] = encode_png(result["rgba"], config.png_compress_level)
            views.append({"azimuth_deg": camera["azimuth_deg"], "elevation_deg": camera["elevation_deg"],
                          "distance": camera["distance"], "camera": result["camera"]})
        meta = {"schema": MULTIVIEW.tag, "object_id": item["object_id"], "object_file": Path(item["object_file"]).name,
                "seed": item["seed"], "split": split_of(item["object_id"], config.test_fraction),
                "bounds": [np.round(lo, 6).tolist(), np.round(hi, 6).tolist()], "views": views,
                "renderer": {"name": self.backend.name, "version": self.backend.version,
                             "engine": config.blender.engine, "device": self.backend.device}}
        record["json"] = json.dumps(meta, sort_keys=True).encode()
        return record
