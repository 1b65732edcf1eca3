"""The curation stages (shards.stage contract, on either runner) and their work lists.

Photos run in two stages with one global pass between them: ``PhotoStage`` checks each photo
and writes kept ones as ``photo`` records with their pHash (per shard, in parallel); the driver
then reads only the hashes of every kept photo of the job and clusters them with the
multi-index search (curate.dedup), so a duplicate in another shard, from another worker, is
found; ``DuplicateFilterStage`` copies each checked shard to the final one, rejecting the
duplicates with the name of the photo kept."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

import numpy as np

from curate.photos import PhotoChecks, PhotoRejected, curate_photo
from shards import storage
from shards.encoding import encode_png
from shards.reader import iter_shard
from shards.schema import PHOTO
from shards.stage import Resources, Stage, rejected

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
LIST_SUFFIXES = (".csv", ".jsonl", ".txt", ".parquet")
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
PATH_COLUMNS = ("path", "url", "image", "file", "source")


@dataclass(frozen=True)
class PhotoJobConfig:
    """``pairforge curate photos`` (configs/curate-photos.yaml)."""
    checks: PhotoChecks = field(default_factory=PhotoChecks)
    samples_per_shard: int = 256
    batch_size: int = 8
    cpus: float = 1.0
    memory_mb: int = 2000
    sample_timeout: float = 60.0
    report_examples: int = 6   # thumbnails per reason in the HTML report

    def check(self) -> None:
        problems = self.checks.problems() + ([] if self.samples_per_shard >= 1 else ["samples_per_shard must be >= 1"])
        if problems:
            raise ValueError("; ".join(problems))


class SourceError(ValueError):
    """A source list that cannot be read; the job stops before any work."""


def _list_entries(url: str) -> list[str]:
    """The image paths or URLs of a csv / jsonl / txt / parquet list (one column of paths)."""
    suffix = "." + url.rsplit(".", 1)[-1].lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq
            table = pq.read_table(io.BytesIO(storage.read_bytes(url)))
            column = next((c for c in PATH_COLUMNS if c in table.column_names), table.column_names[0])
            return [str(v) for v in table.column(column).to_pylist()]
        text = storage.read_text(url)
        if suffix == ".txt":
            return [line.strip() for line in text.splitlines() if line.strip()]
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            return [str(next(row[c] for c in PATH_COLUMNS if c in row)) for row in rows]
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows:
            return []
        column = next((c for c in PATH_COLUMNS if c in rows[0]), None)
        if column is None:
            raise SourceError(f"{url}: no column named {'/'.join(PATH_COLUMNS)}")
        return [row[column] for row in rows]
    except SourceError:
        raise
    except (ValueError, KeyError, StopIteration, UnicodeDecodeError, OSError, ImportError) as error:
        raise SourceError(f"{url}: unreadable source list ({type(error).__name__}: {error}); give a csv/jsonl/txt/"
                          f"parquet with a {'/'.join(PATH_COLUMNS)} column") from None


def _shard_entries(shard: str) -> list[tuple[str, str]]:
    return [(shard, record["__key__"]) for record in iter_shard(shard, decode=False)
            if any(m in record for m in IMAGE_MEMBERS)]


def photo_items(source: str) -> list[dict]:
    """Work items of a SOURCE: a folder of images and/or WebDataset shards, one shard, or a list
    file of paths/URLs (relative entries resolved beside the list). Raises before any work on a
    source that is missing or unreadable."""
    source = storage.absolute(source)
    if not storage.exists(source):
        raise FileNotFoundError(f"--in {source} does not exist")
    entries: list = []
    if storage.is_dir(source):
        for url in sorted(storage.find(source)):
            lower = url.lower()
            if lower.endswith(".tar"):
                entries += _shard_entries(url)
            elif lower.endswith(IMAGE_SUFFIXES):
                entries.append(url)
    elif source.lower().endswith(".tar"):
        entries = _shard_entries(source)
    elif source.lower().endswith(LIST_SUFFIXES):
        base = storage.parent(source)
        entries = [e if storage.is_remote(e) or e.startswith("/") or "://" in e else storage.join(base, e)
                   for e in _list_entries(source)]
    else:
        raise SourceError(f"--in {source}: give a folder, a .tar shard or a {'/'.join(LIST_SUFFIXES)} list")
    if not entries:
        raise FileNotFoundError(f"--in {source}: no images found")
    items = []
    for i, entry in enumerate(entries):
        key = f"p{i:07d}"
        if isinstance(entry, tuple):
            items.append({"__key__": key, "inputs": [list(entry)], "source": f"{entry[0]}#{entry[1]}"})
        else:
            items.append({"__key__": key, "source": entry})
    return items


def _image_bytes(item: dict) -> bytes:
    if "inputs" in item:
        record = item["inputs"][0]
        return next(record[m] for m in IMAGE_MEMBERS if m in record)
    return storage.read_bytes(item["source"])


class PhotoStage(Stage):
    """Photo bytes -> ``photo`` records (checks, person, pose, face, pHash) or rejects."""
    name = "curate-photos"
    schema = PHOTO

    def __init__(self, config: PhotoJobConfig):
        self.config = config
        self.resources = Resources(cpus=config.cpus, memory_mb=config.memory_mb)
        self.batch_size = config.batch_size
        self.sample_timeout = config.sample_timeout
        self.packages = ("imagehash", "opencv-python-headless") + (
            ("mediapipe",) if config.checks.detector == "mediapipe" else ())
        self.detector = None

    def setup(self) -> None:
        from curate.people import make_detector
        self.detector = make_detector(self.config.checks.detector)

    def teardown(self) -> None:
        if self.detector is not None:
            self.detector.close()
            self.detector = None

    def process_batch(self, records: list[dict]) -> list[dict]:
        if self.detector is None:
            self.setup()
        return [self._one(item) for item in records]

    def _one(self, item: dict) -> dict:
        key, source = item["__key__"], item["source"]
        try:
            data = _image_bytes(item)
        except (OSError, StopIteration, storage.StorageError) as error:
            return rejected(key, f"input: cannot read {source} ({type(error).__name__}: {error})", source=source)
        try:
            photo = curate_photo(data, source, self.config.checks, self.detector)
        except PhotoRejected as error:
            scores = error.args[1] if len(error.args) > 1 else {}
            return rejected(key, error.args[0], source=source, scores=scores)
        return {"__key__": key, "image.jpg": photo.image_bytes, "mask.png": encode_png(photo.mask),
                "json": json.dumps(photo.meta)}


def photo_hashes(checked_dir: str) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray, list[str]]:
    """(shard, key) of every kept photo, its pHash, its pixel count and its sha256: read from the
    json members only."""
    from shards.reader import shard_paths
    where, hashes, pixels, digests = [], [], [], []
    for shard in shard_paths(checked_dir):
        for record in iter_shard(shard, decode=False):
            meta = json.loads(record["json"])
            where.append((shard, record["__key__"]))
            hashes.append(int(meta["scores"]["phash"], 16))
            pixels.append(meta["scores"]["width"] * meta["scores"]["height"])
            digests.append(meta["sha256"])
    return where, np.array(hashes, dtype=np.uint64), np.array(pixels), digests


def duplicate_verdicts(checked_dir: str, radius: int) -> dict[str, str]:
    """key -> reason for every photo of the job that duplicates a kept one (the largest of its
    cluster, then the first), across all shards."""
    from curate.dedup import cluster, hamming
    where, hashes, pixels, digests = photo_hashes(checked_dir)
    verdicts = {}
    for i, kept in cluster(hashes, radius, priority=pixels).duplicates().items():
        other = where[kept][1]
        if digests[i] == digests[kept]:
            verdicts[where[i][1]] = f"duplicate: exact copy of {other}"
        else:
            distance = int(hamming(hashes[i:i + 1], hashes[kept:kept + 1])[0])
            verdicts[where[i][1]] = f"duplicate: near-duplicate of {other} (pHash distance {distance})"
    return verdicts


def filter_items(checked_dir: str, verdicts: dict[str, str]) -> list[list[dict]]:
    """One output shard per checked shard: its records, each with its duplicate verdict."""
    from shards.reader import shard_paths
    shards = []
    for shard in shard_paths(checked_dir):
        shards.append([{"__key__": r["__key__"], "inputs": [[shard, r["__key__"]]],
                        "duplicate": verdicts.get(r["__key__"], "")}
                       for r in iter_shard(shard, decode=False)])
    return [s for s in shards if s]


class DuplicateFilterStage(Stage):
    """Checked ``photo`` records -> the same bytes, or a reject naming the photo kept."""
    name = "curate-dedup"
    schema = PHOTO
    resources = Resources(cpus=0.5, memory_mb=500)
    batch_size = 64

    def process_batch(self, records: list[dict]) -> list[dict]:
        out = []
        for item in records:
            record = item["inputs"][0]
            if item["duplicate"]:
                meta = json.loads(record["json"])
                out.append(rejected(item["__key__"], item["duplicate"], source=meta["source"]))
            else:
                out.append({k: v for k, v in record.items() if k != "__url__"})
        return out
