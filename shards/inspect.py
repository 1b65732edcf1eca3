"""The dataset validator behind ``pairforge inspect``: every shard against its manifest
(size, sha256, keys, count) and every record against its schema, plus dataset statistics."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from shards import storage
from shards.keys import SHARD_PREFIX
from shards.reader import ShardError, iter_shard
from shards.schema import OPENPOSE18, schema_named
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
    # per OpenPose-18 keypoint of synthetic pairs' sources: records with it in frame, and visible
    joint_in_frame: Counter = field(default_factory=Counter)
    joint_visible: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems and self.shards > 0

    def lines(self, deep: bool = False) -> list[str]:
        """The summary; ``deep`` adds, per keypoint, the share of records showing it visible of
        those with it in frame."""
        out = [f"{self.directory}: {self.shards} shards, {self.records} records, {self.rejects} rejects"]
        out += [f"  schema {name}: {n} shards" for name, n in sorted(self.schemas.items())]
        out += [f"  split {name}: {n}" for name, n in sorted(self.splits.items())]
        out += [f"  image size {w}x{h}: {n}" for (w, h), n in sorted(self.image_sizes.items())]
        if self.alpha_coverage:
            cov = np.asarray(self.alpha_coverage)
            out.append(f"  src alpha coverage: min {cov.min():.3f} mean {cov.mean():.3f} max {cov.max():.3f}")
        if deep and self.joint_in_frame:
            out.append("  per joint, visible of in frame (source renders):")
            out += [f"    {name:15s} {self.joint_visible[name] / self.joint_in_frame[name]:6.1%} of "
                    f"{self.joint_in_frame[name]}" for name in OPENPOSE18 if self.joint_in_frame[name]]
        out += [f"  rejected ({n}): {reason}" for reason, n in self.reject_reasons.most_common()]
        out += [f"  warning: {w}" for w in self.warnings]
        out += [f"  PROBLEM: {p}" for p in self.problems]
        if self.shards == 0:
            out.append("  PROBLEM: no shards found")
        out.append("OK" if self.ok else f"FAILED: {len(self.problems) or 1} problem(s)")
        return out


def inspect_shard(path: str | Path, report: InspectReport, seen_keys: set[str]) -> None:
    """One shard (a path or a URL, streamed) against its manifest and schema."""
    url, path = str(path), PurePosixPath(storage.name(path))
    manifest = read_manifest(storage.parent(url), path.stem)
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
    size = storage.size(url)
    if size != manifest.get("bytes"):
        report.problems.append(f"{path.name}: {size} bytes, manifest says {manifest.get('bytes')}")
    elif storage.sha256(url) != manifest.get("sha256"):
        report.problems.append(f"{path.name}: sha256 differs from the manifest")
    keys, splits = [], []
    try:
        for record in iter_shard(url):
            key = record["__key__"]
            keys.append(key)
            splits.append(record["json"].get("split") if isinstance(record.get("json"), dict) else None)
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
    elif "splits" in manifest and manifest["splits"] != splits:
        report.problems.append(f"{path.name}: the manifest's splits differ from the records' json split")
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
    source = meta.get("src") if isinstance(meta, dict) else None
    if isinstance(source, dict) and "in_frame" in source:  # synthetic pairs since the visibility fields
        for name, (_, _, visible), framed in zip(OPENPOSE18, source["keypoints"], source["in_frame"]):
            report.joint_in_frame[name] += bool(framed)
            report.joint_visible[name] += bool(framed) and visible > 0


def inspect_dataset(directory: str | Path) -> InspectReport:
    """Validate every shard under ``directory`` (recursively) and gather statistics."""
    root = storage.absolute(directory)  # a folder, or a URL prefix whose shards are streamed
    report = InspectReport(root)
    if not storage.is_dir(root):
        report.problems.append(f"{root} is not a directory")
        return report
    files = storage.find(root)
    present = set(files)
    seen_keys: dict[str, set[str]] = {}  # keys are unique within a dataset (a folder of shards)
    for path in (f for f in files if f.endswith(".tar")):
        report.shards += 1
        inspect_shard(path, report, seen_keys.setdefault(storage.parent(path), set()))
    for tmp in (f for f in files if f.endswith(".tar.tmp")):
        report.warnings.append(f"{storage.name(tmp)}: an unfinished shard (a running or crashed job); not counted")
    for manifest in (f for f in files if f.endswith(".json")):
        stem = storage.name(manifest).removesuffix(".json")
        if stem.startswith(SHARD_PREFIX) and manifest.removesuffix(".json") + ".tar" not in present:
            report.problems.append(f"{storage.name(manifest)}: manifest without its shard")
    return report
