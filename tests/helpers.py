"""Helpers shared by test modules (fixtures live in conftest.py). Test modules import from here,
never from one another. The project's packages are imported inside the functions, so importing
this module (test_layering does, for ROOT) loads none of them."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]  # the repository


# ---- shards: small synthetic records and raw tars -----------------------------------------------

def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def make_record(key: str, split: str = "train") -> dict:
    """A small valid synthetic_pair record (24 x 16 pixels), its members encoded."""
    from shards.schema import SYNTHETIC_PAIR
    src = np.zeros((24, 16, 4), np.uint8)
    src[8:16, 4:12] = 200
    kp = [[8.0, 12.0, 1.0]] * 18
    meta = {"schema": SYNTHETIC_PAIR.tag, "character_id": "c", "pose_id": 1, "view_id": 0, "seed": 3,
            "renderer": {"name": "test", "version": "0"}, "split": split,
            "src": {"spec": {}, "keypoints": kp}, "std": {"spec": {}, "keypoints": kp, "face_box": [1, 1, 5, 5]}}
    return {"__key__": key, "src.png": png_bytes(src), "std.png": png_bytes(np.full((24, 16, 3), 255, np.uint8)),
            "json": json.dumps(meta).encode()}


def write_shard(directory, name="shard-000000", keys=("a-1", "a-2")):
    """A synthetic_pair shard of ``keys`` and one reject (a-9), with its manifest; returns the manifest."""
    from shards.schema import SYNTHETIC_PAIR
    from shards.writer import ShardWriter
    with ShardWriter(directory, name, SYNTHETIC_PAIR, "cfg") as writer:
        for key in keys:
            writer.write(make_record(key))
        writer.write({"__key__": "a-9", "status": "rejected", "error": "character: broken"})
    return writer.manifest


def raw_tar(path, members):
    """A tar of (name, bytes) members as given, bypassing the writer's checks."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# ---- characters: a good .glb rewritten into broken ones ----------------------------------------

def rewrite_glb(good: Path, out: Path, edit) -> Path:
    """``good`` with ``edit(gltf_json)`` applied, written to ``out``."""
    from render.gltf import Glb, GlbBuilder
    builder = GlbBuilder.from_glb(Glb.load(good))
    edit(builder.gltf)
    out.write_bytes(builder.to_bytes())
    return out


def make_unskinned(good: Path, tmp: Path) -> Path:
    def edit(gltf):
        del gltf["skins"]
        del gltf["nodes"][0]["skin"]
    return rewrite_glb(good, tmp / "unskinned.glb", edit)


def make_unmappable(good: Path, tmp: Path) -> Path:
    def edit(gltf):
        for i, node in enumerate(gltf["nodes"][1:]):
            node["name"] = f"Bone.{i:03d}"
    return rewrite_glb(good, tmp / "unmappable.glb", edit)


def make_cyclic(good: Path, tmp: Path) -> Path:
    def edit(gltf):
        gltf["nodes"][2].setdefault("children", []).append(1)  # spine -> hips: a loop
    return rewrite_glb(good, tmp / "cyclic.glb", edit)
