"""Pruning a folder of backgrounds once: unreadable, tiny, blank or near-uniform images and
duplicates go, each with its reason; the kept images are copied to OUT/kept, the folder that
compositing reads (``--backgrounds OUT/kept``). The same decode and hash as the photos."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from curate.photos import PhotoChecks, PhotoRejected, decode, perceptual_hash
from shards import storage
from shards.schema import BACKGROUND
from shards.stage import Resources, Stage, rejected

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class BackgroundJobConfig:
    """``pairforge curate backgrounds`` (configs/curate-backgrounds.yaml); every threshold here."""
    min_side: int = 256
    max_pixels: int = 60_000_000
    min_std: float = 6.0             # grey-level spread below which an image is blank / near-uniform
    min_edges: float = 0.002         # fraction of edge pixels (Canny) below which it is featureless
    near_duplicate_bits: int = 5
    samples_per_shard: int = 512
    report_examples: int = 6

    def check(self) -> None:
        if self.min_side < 1 or self.samples_per_shard < 1 or not 0 <= self.near_duplicate_bits < 32:
            raise ValueError("min_side and samples_per_shard must be >= 1, near_duplicate_bits in 0..31")


def check_background(width: int, height: int, std: float, edges: float, c: BackgroundJobConfig) -> str | None:
    if min(width, height) < c.min_side:
        return f"size: {width}x{height}, shorter side under min_side={c.min_side}"
    if std < c.min_std:
        return f"blank: grey spread {std:.1f} < min_std={c.min_std}"
    if edges < c.min_edges:
        return f"blank: {edges:.2%} edge pixels < min_edges={c.min_edges:.2%}"
    return None


def background_verdict(data: bytes, c: BackgroundJobConfig) -> tuple[str | None, dict]:
    import cv2
    try:
        decoded = decode(data, PhotoChecks(max_pixels=c.max_pixels))
    except PhotoRejected as error:
        return error.args[0], {}
    grey = cv2.cvtColor(decoded.work, cv2.COLOR_RGB2GRAY)
    width, height = decoded.size
    scores = {"width": width, "height": height, "std": round(float(grey.std()), 2),
              "edges": round(float((cv2.Canny(grey, 50, 150) > 0).mean()), 5)}
    reason = check_background(width, height, scores["std"], scores["edges"], c)
    if not reason:
        scores["phash"] = f"{perceptual_hash(decoded.work):016x}"
    return reason, scores


def background_items(in_dir: str) -> list[dict]:
    if not storage.is_dir(in_dir):
        raise FileNotFoundError(f"--in {in_dir} is not a folder of images")
    files = [f for f in sorted(storage.find(in_dir)) if f.lower().endswith(SUFFIXES)]
    if not files:
        raise FileNotFoundError(f"--in {in_dir}: no images ({', '.join(SUFFIXES)})")
    return [{"__key__": f"b{i:07d}", "source": f} for i, f in enumerate(files)]


class BackgroundStage(Stage):
    name = "curate-backgrounds"
    schema = BACKGROUND
    resources = Resources(cpus=1.0, memory_mb=1000)
    batch_size = 16
    sample_timeout = 60.0
    packages = ("imagehash",)

    def __init__(self, config: BackgroundJobConfig):
        self.config = config

    def process_batch(self, records: list[dict]) -> list[dict]:
        out = []
        for item in records:
            key, source = item["__key__"], item["source"]
            try:
                data = storage.read_bytes(source)
            except (OSError, storage.StorageError) as error:
                out.append(rejected(key, f"input: cannot read {source} ({type(error).__name__})", source=source))
                continue
            reason, scores = background_verdict(data, self.config)
            if reason:
                out.append(rejected(key, reason, source=source, scores=scores))
            else:
                out.append({"__key__": key, "json": json.dumps({"schema": BACKGROUND.tag, "source": source,
                                                                "sha256": hashlib.sha256(data).hexdigest(),
                                                                "scores": scores})})
        return out


def write_kept(kept_dir: str, out_dir: str) -> list[str]:
    """OUT/kept.txt and OUT/kept/ (copies named by key, so names from subfolders cannot clash)."""
    from shards.reader import iter_shard, shard_paths
    rows = [(r["__key__"], json.loads(r["json"])["source"]) for shard in shard_paths(kept_dir)
            for r in iter_shard(shard, decode=False)]
    storage.write_bytes(storage.join(out_dir, "kept.txt"), "".join(f"{s}\n" for _, s in rows).encode())
    folder = storage.join(out_dir, "kept")
    storage.makedirs(folder)
    for key, source in rows:
        suffix = "." + source.rsplit(".", 1)[-1].lower()
        storage.write_bytes(storage.join(folder, key + suffix), storage.read_bytes(source))
    return [s for _, s in rows]
