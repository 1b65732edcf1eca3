"""RenderStage: work items (character, pose id, view id) -> ``synthetic_pair`` records.
A character is loaded once and its standardized render made once, then reused by all of its
pairs; a character that cannot be loaded rejects its samples with the reason, and the job goes on.
No bad record is written: a character whose standardized render is empty or whose face box is off
its place rejects its samples, and so does a pair whose limbs pass through each other, whose
source render is empty, or whose keypoints mostly miss the character (render.qa says why)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from render.characters import Character, CharacterError
from render.config import RenderConfig
from render.qa import empty_render, interpenetration, keypoints_off_character, limb_radii, misplaced_face
from shards.encoding import encode_png
from render.spec import sample_source_spec, standard_spec
from shards.keys import sample_key, sample_seed, split_of
from shards.schema import SYNTHETIC_PAIR
from shards.stage import Resources, Stage, each_or_reject, rejected


def _round(values, digits: int = 2) -> list:
    return np.round(np.asarray(values, dtype=float), digits).tolist()


def keypoint_meta(result: dict) -> dict:
    """The keypoints of a render as the record stores them (shards.schema documents the fields)."""
    return {"keypoints": _round(result["keypoints"]), "in_frame": result["in_frame"].astype(int).tolist(),
            "occluded": result["occluded"].astype(int).tolist()}


def plan_items(config: RenderConfig, character_files: list[str]) -> list[dict]:
    """Every sample of the job, grouped by character: a pure function of the config and files."""
    items = []
    for c, path in enumerate(character_files):
        rng = np.random.default_rng([config.seed, 0xC4A2, c])
        poses = sorted(rng.choice(config.pose_total(), size=config.poses_per_character, replace=False).tolist())
        for pose_id in poses:
            for view in range(config.views_per_pose):
                key = sample_key(c, pose_id, view)
                items.append({"__key__": key, "character_index": c, "character_file": str(path),
                              "character_id": Path(path).stem, "pose_id": pose_id, "view_id": view,
                              "seed": sample_seed(config.seed, key)})
    return items


class RenderStage(Stage):
    name = "render"
    schema = SYNTHETIC_PAIR

    def __init__(self, config: RenderConfig, log_dir: str | None = None):
        self.config = config
        blender = config.backend == "blender"
        # One pyrender process keeps two cores busy (llvmpipe rasterizes on several threads): measured,
        # two workers on a 2-core machine are slower than one.
        self.resources = Resources(cpus=2.0, gpus=config.blender.gpus_per_worker if blender else 0.0, memory_mb=1500)
        self.batch_size = config.batch_size
        # Blender requests have their own deadline (a hung worker is replaced); this is the backstop.
        self.sample_timeout = 3 * config.blender.timeout_s * config.blender.tries + 60 if blender else 120.0
        self.packages = {"pyrender": ("pyrender",), "blender": ("bpy",)}.get(config.backend, ())
        self.log_dir = log_dir  # where Blender workers write their logs
        self.backend = None
        self._blas_limit = None
        self._character: Character | None = None
        self._current: str | None = None  # the character file loaded (or failed) last
        self._failed: tuple[str, dict] | None = None  # why it cannot be used: the reason and its measurements
        self._pose_table: list | None = None
        self._standard: dict | None = None
        self._limb_radii: dict[str, float] = {}

    def setup(self) -> None:
        from threadpoolctl import threadpool_limits

        from render.backends import make_backend
        from render.motions import read_pose_table
        # The stage's numpy work is small matrix products (skinning, projection): BLAS threads
        # gain nothing there and contend with the renderer's own threads (measured on Ray, whose
        # workers get OMP_NUM_THREADS = their CPUs: ~20 % slower renders with two BLAS threads).
        self._blas_limit = threadpool_limits(limits=1, user_api="blas")
        self.backend = make_backend(self.config.backend, self.config.blender, self.log_dir)
        self._pose_table = [row["pose"] for row in read_pose_table(self.config.pose_table)] \
            if self.config.pose_table else None

    def teardown(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        if self._blas_limit is not None:
            self._blas_limit.restore_original_limits()
            self._blas_limit = None

    def _switch_to(self, path: str) -> None:
        """Load the character at ``path`` (once) and render its standardized view (once)."""
        if path == self._current:
            return
        self._current, self._character, self._standard, self._failed = None, None, None, None
        try:
            character = self.backend.open_character(path)
            spec = standard_spec(self.config.standard, character.id, Path(path).name, self.config.resolution)
            result = self.backend.render(spec)
        except Exception as error:  # it cannot load, or its standard render (which every pair needs) failed
            detail = str(error) if isinstance(error, CharacterError) else f"{type(error).__name__}: {error}"
            self._current, self._failed = path, (f"character: {detail}", {})
            return
        problem = empty_render(result, "standardized") or misplaced_face(result, self.config.standard)
        if problem is not None:  # every pair of this character would carry a bad target
            self._current, self._failed = path, problem
            return
        # An interrupt (a sample deadline) leaves _current unset, so the next sample tries again.
        self._current = path
        self._character = character
        self._limb_radii = limb_radii(character)
        self._standard = {
            "png": encode_png(result["rgb_on_white"], self.config.png_compress_level),
            "meta": {"spec": spec.to_json(), **keypoint_meta(result), "face_box": result["face_box"],
                     "camera": result["camera"]},
        }

    def process_batch(self, items: list[dict]) -> list[dict]:
        return each_or_reject(self.name, items, self._sample)

    def _sample(self, item: dict) -> dict:
        self._switch_to(item["character_file"])
        if self._character is None:
            reason, fields = self._failed
            return rejected(item["__key__"], reason, **fields)
        return self._render_pair(item)

    def _render_pair(self, item: dict) -> dict:
        character = self._character
        spec = sample_source_spec(self.config.scene, item["seed"], self.config.seed, character.id,
                                  Path(item["character_file"]).name, item["pose_id"], item["view_id"],
                                  character.expressions, self.config.resolution,
                                  self._pose_table[item["pose_id"]] if self._pose_table else None)
        globals_ = character.node_globals(spec.pose)
        problem = interpenetration({joint: globals_[node][:3, 3] for joint, node in character.joint_nodes.items()},
                                   self._limb_radii)
        if problem is None:
            result = self.backend.render(spec)
            problem = empty_render(result, "source") or keypoints_off_character(result)
        if problem is not None:
            reason, fields = problem
            return rejected(item["__key__"], reason, **fields)
        meta = {
            "schema": SYNTHETIC_PAIR.tag, "character_id": character.id, "character_index": item["character_index"],
            "pose_id": item["pose_id"], "view_id": item["view_id"], "seed": item["seed"],
            "split": split_of(character.id, self.config.test_fraction),
            "renderer": {"name": self.backend.name, "version": self.backend.version},
            "src": {"spec": spec.to_json(), **keypoint_meta(result), "camera": result["camera"]},
            "std": self._standard["meta"],
        }
        return {"__key__": item["__key__"], "src.png": encode_png(result["rgba"], self.config.png_compress_level),
                "std.png": self._standard["png"], "json": json.dumps(meta, sort_keys=True).encode()}
