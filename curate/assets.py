"""Checks on character assets, each a pure function of what render/ loaded and the config,
returning None (ok) or a reason ``"category: detail"``; the asset stage that runs them in order;
and the duplicate signature of a character: a scale- and name-invariant shape descriptor of the
rest mesh plus the pHash of a canonical front render (both must agree for a duplicate).

Assets are read with render/'s numpy loader (.glb, .vrm); .gltf/.fbx/.blend need Blender to be
read and are rejected with that reason (render them into .glb with ``--backend blender`` first)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from curate.dedup import hash_to_int
from render.bonemap import UnmappableRig, map_bones
from render.characters import Character, CharacterError, load_character
from render.gltf import BINARY_GLTF_SUFFIXES, Glb, GltfError
from shards import storage
from shards.schema import ASSET
from shards.stage import Resources, Stage, rejected

ASSET_SUFFIXES = (".glb", ".gltf", ".vrm", ".fbx", ".blend")
DESCRIPTOR_BINS = 32
DESCRIPTOR_PAIRS = 100_000  # sampling noise ~0.015 (L1) on a re-ordered mesh


@dataclass(frozen=True)
class AssetChecks:
    """Every threshold of the asset checks (``--set checks.NAME=VALUE``)."""
    min_bones: int = 15
    max_bones: int = 500
    max_depth: int = 40
    min_bone_length: float = 1e-4      # relative to the character's height
    min_triangles: int = 500
    max_triangles: int = 500_000
    min_height_m: float = 0.2           # rest-mesh height in metres (absurd scale outside)
    max_height_m: float = 5.0
    max_degenerate: float = 0.05        # fraction of zero-area triangles
    min_weighted: float = 0.95          # fraction of vertices with skin weights
    min_texture_side: int = 64
    max_uv_outside: float = 0.5         # fraction of UVs outside [0, 1]
    uniform_texture_std: float = 2.0    # a texture with less spread is blank
    near_duplicate_bits: int = 6        # canonical-render pHash distance
    max_shape_distance: float = 0.025   # L1 distance of the shape descriptors

    def problems(self) -> list[str]:
        out = []
        if not 0 < self.min_height_m < self.max_height_m:
            out.append("checks.min_height_m must be > 0 and below checks.max_height_m")
        if not 0 <= self.near_duplicate_bits < 32:
            out.append("checks.near_duplicate_bits must be in 0..31")
        if self.min_bones > self.max_bones or self.min_triangles > self.max_triangles:
            out.append("checks: a min_ threshold is above its max_")
        return out


@dataclass(frozen=True)
class AssetJobConfig:
    """``pairforge curate assets`` (configs/curate-assets.yaml)."""
    checks: AssetChecks = field(default_factory=AssetChecks)
    samples_per_shard: int = 64
    cpus: float = 1.0
    memory_mb: int = 2000
    sample_timeout: float = 120.0
    report_examples: int = 6

    def check(self) -> None:
        problems = self.checks.problems() + ([] if self.samples_per_shard >= 1 else ["samples_per_shard must be >= 1"])
        if problems:
            raise ValueError("; ".join(problems))


# --- pure checks ---------------------------------------------------------------------------------

def check_animatable(glb: Glb) -> str | None:
    """An armature that deforms a mesh: a skin, a mesh node that uses it, skin attributes."""
    nodes = glb.gltf.get("nodes", [])
    if not glb.gltf.get("skins"):
        return "animatable: no armature (no glTF skin)"
    if not any("mesh" in n and "skin" in n for n in nodes):
        return "animatable: the armature deforms no mesh"
    return None


def check_bonemap(glb: Glb) -> str | None:
    nodes = glb.gltf["nodes"]
    names = [nodes[j].get("name", f"node{j}") for j in glb.gltf["skins"][0]["joints"]]
    try:
        map_bones(names)
    except UnmappableRig as error:
        return f"bonemap: {error}"
    return None


def check_skeleton(char: Character, c: AssetChecks) -> str | None:
    bones = len(char.skin_nodes)
    if not c.min_bones <= bones <= c.max_bones:
        return f"skeleton: {bones} bones outside [{c.min_bones}, {c.max_bones}]"
    if not np.isfinite(char.global_rest).all() or not np.isfinite(char.inverse_bind).all():
        return "skeleton: NaN or inf in the bone matrices"
    depth = np.zeros(len(char.parents), dtype=int)
    for n, parent in enumerate(char.parents):  # parents first
        depth[n] = 0 if parent < 0 else depth[parent] + 1
    if depth.max() > c.max_depth:
        return f"skeleton: depth {depth.max()} > {c.max_depth}"
    heads = char.global_rest[:, :3, 3]
    scale = max(char.height(), 1e-9)
    for joint, node in char.joint_nodes.items():
        parent = char.parents[node]
        if parent >= 0 and np.linalg.norm(heads[node] - heads[parent]) < c.min_bone_length * scale:
            return f"skeleton: zero-length bone {char.node_names[node]} ({joint})"
    return None


def check_mesh(char: Character, c: AssetChecks) -> str | None:
    positions = np.vstack([p.positions for p in char.primitives])
    if not np.isfinite(positions).all():
        return f"mesh: {int((~np.isfinite(positions)).any(1).sum())} vertices are NaN or inf"
    faces, _ = char.stacked_faces()
    if not c.min_triangles <= len(faces) <= c.max_triangles:
        return f"mesh: {len(faces)} triangles outside [{c.min_triangles}, {c.max_triangles}]"
    height = char.height()
    if not c.min_height_m <= height <= c.max_height_m:
        return f"mesh: height {height:.3g} m outside [{c.min_height_m}, {c.max_height_m}] (absurd scale)"
    corners = positions[faces]
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    degenerate = float((area < 1e-12 * height * height).mean())
    if degenerate > c.max_degenerate:
        return f"mesh: {degenerate:.0%} degenerate triangles (> {c.max_degenerate:.0%})"
    weighted = float(np.mean(np.concatenate([p.weights.sum(1) > 0.5 for p in char.primitives])))
    if weighted < c.min_weighted:
        return f"animatable: only {weighted:.0%} of the vertices follow a bone"
    return None


def check_textures(char: Character, c: AssetChecks) -> str | None:
    for i, prim in enumerate(char.primitives):
        if prim.texture is None:
            continue
        texture = prim.texture[..., :3].astype(np.float32)
        height, width = texture.shape[:2]
        if min(height, width) < c.min_texture_side:
            return f"texture: {width}x{height} under checks.min_texture_side={c.min_texture_side}"
        mean = texture.reshape(-1, 3).mean(0)
        if mean[0] > 200 and mean[2] > 200 and mean[1] < 60:
            return "texture: magenta (a missing-texture placeholder)"
        if texture.std() < c.uniform_texture_std:
            return f"texture: uniform ({'black' if mean.max() < 10 else 'one colour'})"
        if prim.uvs is not None:
            outside = float(((prim.uvs < -1e-3) | (prim.uvs > 1 + 1e-3)).any(1).mean())
            if outside > c.max_uv_outside:
                return f"texture: {outside:.0%} of UVs outside [0, 1] (primitive {i})"
    return None


# --- duplicate signature -------------------------------------------------------------------------

def shape_descriptor(char: Character) -> np.ndarray:
    """The D2 shape distribution (Osada et al. 2002) of the rest mesh: a histogram of distances
    between seeded random vertex pairs over their mean; blind to bone names and to scale."""
    positions = np.vstack([p.positions for p in char.primitives]).astype(np.float64)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(positions), (2, DESCRIPTOR_PAIRS))
    distance = np.linalg.norm(positions[a] - positions[b], axis=1)
    histogram, _ = np.histogram(distance / max(distance.mean(), 1e-12), bins=DESCRIPTOR_BINS, range=(0, 3))
    return histogram / DESCRIPTOR_PAIRS


def canonical_render(char: Character, size: int = 64) -> np.ndarray:
    """A front orthographic view of the rest mesh (vertices splatted with their texture colour,
    the front-most last), fitted to a square by the mesh's bounds: the same picture whatever the
    asset's scale or bone names."""
    pixels = np.full((size, size, 3), 255, np.uint8)
    everything = np.vstack([p.positions for p in char.primitives])
    everything = everything[np.isfinite(everything).all(1)]
    low, high = everything.min(0), everything.max(0)
    extent, centre = max(float((high - low)[:2].max()), 1e-12), (low + high) / 2
    for prim in char.primitives:
        if prim.texture is not None and prim.uvs is not None:
            th, tw = prim.texture.shape[:2]
            u = np.clip((prim.uvs[:, 0] % 1.0) * (tw - 1), 0, tw - 1).astype(int)
            v = np.clip((prim.uvs[:, 1] % 1.0) * (th - 1), 0, th - 1).astype(int)
            colours = prim.texture[v, u, :3]
        else:
            colours = np.tile((np.array(prim.colour[:3]) * 255).astype(np.uint8), (len(prim.positions), 1))
        x = ((prim.positions[:, 0] - centre[0]) / extent + 0.5) * (size - 1)
        y = (0.5 - (prim.positions[:, 1] - centre[1]) / extent) * (size - 1)
        order = np.argsort(prim.positions[:, 2])
        order = order[np.isfinite(x[order] + y[order])]
        pixels[np.clip(y[order].round().astype(int), 0, size - 1),
               np.clip(x[order].round().astype(int), 0, size - 1)] = colours[order]
    return pixels


def render_hash(char: Character) -> int:
    import imagehash
    from PIL import Image
    return hash_to_int(imagehash.phash(Image.fromarray(canonical_render(char))).hash)


# --- the stage -----------------------------------------------------------------------------------

def asset_verdict(path: str, c: AssetChecks) -> tuple[str | None, dict]:
    """(the first failing reason or None, the measurements) of one asset file."""
    suffix = "." + path.rsplit(".", 1)[-1].lower()
    if suffix not in BINARY_GLTF_SUFFIXES:
        return (f"load: {suffix} is read by Blender only; convert it to .glb (pairforge render --backend blender "
                f"reads it) or curate the .glb export"), {}
    try:
        glb = Glb(storage.read_bytes(path), storage.name(path))
    except (GltfError, OSError) as error:
        return f"load: {error}", {}
    reason = check_animatable(glb) or check_bonemap(glb)
    if reason:
        return reason, {}
    try:
        char = load_character(path)
    except CharacterError as error:
        message = str(error)
        return (f"texture: {message}" if "texture" in message else f"load: {message}"), {}
    faces, _ = char.stacked_faces()
    scores = {"bones": int(len(char.skin_nodes)), "triangles": int(len(faces)), "height_m": round(char.height(), 4)}
    reason = check_skeleton(char, c) or check_mesh(char, c) or check_textures(char, c)
    if reason:
        return reason, scores
    scores["render_phash"] = f"{render_hash(char):016x}"
    scores["shape"] = [round(float(v), 5) for v in shape_descriptor(char)]
    return None, scores


def asset_files(in_dir: str) -> list[str]:
    if not storage.is_dir(in_dir):
        raise FileNotFoundError(f"--in {in_dir} is not a folder of {'/'.join(ASSET_SUFFIXES)} files")
    files = [f for f in sorted(storage.find(in_dir)) if f.lower().endswith(ASSET_SUFFIXES)]
    if not files:
        raise FileNotFoundError(f"--in {in_dir}: no {'/'.join(ASSET_SUFFIXES)} files")
    return files


def asset_items(files: list[str]) -> list[dict]:
    return [{"__key__": f"a{i:06d}", "source": f} for i, f in enumerate(files)]


class AssetStage(Stage):
    """Asset files -> ``asset`` records (the measurements and the duplicate signature) or rejects."""
    name = "curate-assets"
    schema = ASSET
    batch_size = 4
    packages = ("imagehash",)

    def __init__(self, config: AssetJobConfig):
        self.config = config
        self.resources = Resources(cpus=config.cpus, memory_mb=config.memory_mb)
        self.sample_timeout = config.sample_timeout

    def process_batch(self, records: list[dict]) -> list[dict]:
        out = []
        for item in records:
            reason, scores = asset_verdict(item["source"], self.config.checks)
            if reason:
                out.append(rejected(item["__key__"], reason, source=item["source"], scores=scores))
            else:
                out.append({"__key__": item["__key__"], "json": json.dumps(
                    {"schema": ASSET.tag, "source": item["source"], "scores": scores,
                     "checks": asdict(self.config.checks)})})
        return out


def duplicate_verdicts(checked_dir: str, c: AssetChecks) -> dict[str, str]:
    """key -> reason for every asset whose canonical render (pHash within ``near_duplicate_bits``)
    and shape descriptor (L1 within ``max_shape_distance``) match a kept one."""
    from curate.dedup import near_pairs
    from shards.reader import iter_shard, shard_paths
    rows = [json.loads(r["json"]) | {"key": r["__key__"]}
            for shard in shard_paths(checked_dir) for r in iter_shard(shard, decode=False)]
    if not rows:
        return {}
    hashes = np.array([int(r["scores"]["render_phash"], 16) for r in rows], dtype=np.uint64)
    shapes = np.array([r["scores"]["shape"] for r in rows])
    kept = np.arange(len(rows))
    for i, j in near_pairs(hashes, c.near_duplicate_bits):  # i < j: the first in input order is kept
        if np.abs(shapes[i] - shapes[j]).sum() <= c.max_shape_distance and kept[j] == j:
            kept[j] = kept[i]
    return {rows[j]["key"]: f"duplicate: of {rows[k]['key']} ({storage.name(rows[k]['source'])})"
            for j, k in enumerate(kept) if k != j}


def write_kept(assets_dir: str, out_dir: str) -> list[str]:
    """OUT/kept.txt (one asset per line) and OUT/kept/ (the kept files, the folder that
    ``pairforge render --set characters.source=OUT/kept`` takes)."""
    from shards.reader import iter_shard, shard_paths
    sources = [json.loads(r["json"])["source"] for shard in shard_paths(assets_dir)
               for r in iter_shard(shard, decode=False)]
    storage.write_bytes(storage.join(out_dir, "kept.txt"), "".join(f"{s}\n" for s in sources).encode())
    folder = storage.join(out_dir, "kept")
    storage.makedirs(folder)
    for source in sources:
        storage.write_bytes(storage.join(folder, storage.name(source)), storage.read_bytes(source))
    return sources
