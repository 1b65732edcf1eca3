"""The dataset validator behind ``pairforge inspect``: every shard against its manifest
(size, sha256, keys, count) and every record against its schema, plus dataset statistics."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shards.keys import SHARD_PREFIX
from shards.reader import ShardError, iter_shard
from shards.schema import schema_named
from shards.writer import read_manifest


@dataclass
class InspectReport:
    directory: str
    shards: int = 0
    records: int = 0
    rejects: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    splits: Counter = field(default_factory=Counter)
    reject_reasons: Counter = field(default_factory=Counter)
    image_sizes: Counter = field(default_factory=Counter)
    schemas: Counter = field(default_factory=Counter)
    alpha_coverage: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.shards > 0

    def lines(self) -> list[str]:
        out = [f"{self.directory}: {self.shards} shards, {self.records} records, {self.rejects} rejects"]
        out += [f"  schema {name}: {n} shards" for name, n in sorted(self.schemas.items())]
        out += [f"  split {name}: {n}" for name, n in sorted(self.splits.items())]
        out += [f"  image size {w}x{h}: {n}" for (w, h), n in sorted(self.image_sizes.items())]
        if self.alpha_coverage:
            cov = np.asarray(self.alpha_coverage)
            out.append(f"  src alpha coverage: min {cov.min():.3f} mean {cov.mean():.3f} max {cov.max():.3f}")
        out += [f"  rejected ({n}): {reason}" for reason, n in self.reject_reasons.most_common()]
        out += [f"  warning: {w}" for w in self.warnings]
        out += [f"  PROBLEM: {p}" for p in self.problems]
        if self.shards == 0:
            out.append("  PROBLEM: no shards found")
        out.append("OK" if self.ok else f"FAILED: {len(self.problems) or 1} problem(s)")
        return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_shard(path: Path, report: InspectReport, seen_keys: set[str]) -> None:
    manifest = read_manifest(path.parent, path.stem)
    if manifest is None:
        report.problems.append(f"{path.name}: no readable manifest {path.stem}.json")
        return
    try:
        schema = schema_named(manifest["schema"]["name"])
    except KeyError as error:
        report.problems.append(f"{path.name}: {error}")
        return
    report.schemas[schema.tag] += 1
    if manifest["schema"]["version"] != schema.version:
        report.problems.append(f"{path.name}: schema version {manifest['schema']['version']} "
                               f"is not the supported {schema.version}")
    if path.stat().st_size != manifest.get("bytes"):
        report.problems.append(f"{path.name}: {path.stat().st_size} bytes, manifest says {manifest.get('bytes')}")
    elif _sha256(path) != manifest.get("sha256"):
        report.problems.append(f"{path.name}: sha256 differs from the manifest")
    keys = []
    try:
        for record in iter_shard(path):
            key = record["__key__"]
            keys.append(key)
            if key in seen_keys:
                report.problems.append(f"{path.name}: key {key} appears in more than one place")
            seen_keys.add(key)
            for problem in schema.validate(record):
                report.problems.append(f"{path.name}: {key}: {problem}")
            _collect_statistics(record, report)
    except ShardError as error:
        report.problems.append(str(error))
        return
    if keys != manifest.get("keys") or len(keys) != manifest.get("count"):
        report.problems.append(f"{path.name}: holds {len(keys)} records, manifest lists {manifest.get('count')}")
    report.records += len(keys)
    report.rejects += len(manifest.get("rejects", []))
    report.reject_reasons.update(r["error"] for r in manifest.get("rejects", []))


def _collect_statistics(record: dict, report: InspectReport) -> None:
    meta = record.get("json")
    if isinstance(meta, dict) and "split" in meta:
        report.splits[meta["split"]] += 1
    image = record.get("src.png")
    if isinstance(image, np.ndarray) and image.ndim == 3:
        report.image_sizes[(image.shape[1], image.shape[0])] += 1
        if image.shape[2] == 4:
            report.alpha_coverage.append(float((image[..., 3] > 0).mean()))


def inspect_dataset(directory: str | Path) -> InspectReport:
    """Validate every shard under ``directory`` (recursively) and gather statistics."""
    root = Path(directory)
    report = InspectReport(str(root))
    if not root.is_dir():
        report.problems.append(f"{root} is not a directory")
        return report
    seen_keys: dict[Path, set[str]] = {}  # keys are unique within a dataset (a folder of shards)
    for path in sorted(root.rglob("*.tar")):
        report.shards += 1
        inspect_shard(path, report, seen_keys.setdefault(path.parent, set()))
    for tmp in sorted(root.rglob("*.tar.tmp")):
        report.warnings.append(f"{tmp.name}: an unfinished shard (a running or crashed job); not counted")
    for manifest in sorted(root.rglob("*.json")):
        if manifest.stem.startswith(SHARD_PREFIX) and not manifest.with_suffix(".tar").exists():
            report.problems.append(f"{manifest.name}: manifest without its shard")
    return report
