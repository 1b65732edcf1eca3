"""Where a dataset's shards are and what they hold, known before any tar is opened: a dataset is
given as a folder, a glob or a brace pattern (``shard-{000000..000009}.tar``) of local paths or
URLs (``s3://``, ``gs://``, ``file://``: through shards.storage, streamed, never downloaded whole),
and each shard's manifest (NAME.json beside NAME.tar) gives its record kind, count and keys. So a
dataset of the wrong kind is refused before training starts, and the split (``split.py``) can cut
at the sample level from the counts alone.

A shard whose manifest is missing (the writer writes it last: the shard is incomplete) or does not
match its tar's size (truncated or replaced) is left out with a logged reason and listed in
``ShardSet.skipped``: never read, never a crash."""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Iterator

from shards import storage
from shards.reader import iter_shard

log = logging.getLogger(__name__)

_BRACE = re.compile(r"\{([^{}]*)\}")


class DatasetKindError(ValueError):
    """A dataset whose record kind is not the one the loader decodes."""


@dataclass(frozen=True)
class ShardSource:
    """One shard as its manifest describes it: the records a loader reads from it (``keys``; all
    of them, or one split's) and, when not all, where each sits in the tar (``positions``)."""
    path: str
    name: str
    kind: str
    count: int
    keys: tuple[str, ...]
    splits: tuple[str | None, ...] | None = None  # the manifest's per-record train/test split
    positions: tuple[int, ...] | None = None      # None: keys[i] is record i of the tar

    def position(self, index: int) -> int:
        return index if self.positions is None else self.positions[index]

    def only(self, split: str) -> "ShardSource":
        """This shard's records of one split (the manifest says which, so no tar is opened)."""
        if self.splits is None:
            raise ValueError(f"{self.path}: its manifest lists no per-record splits (written before they "
                             f"were recorded): re-run the job that wrote it, or load without split=")
        kept = [i for i, s in enumerate(self.splits) if s == split]
        return ShardSource(self.path, self.name, self.kind, len(kept), tuple(self.keys[i] for i in kept),
                           tuple(split for _ in kept), tuple(self.position(i) for i in kept))


@dataclass(frozen=True)
class ShardSet:
    """A dataset's usable shards (in name order) and the ones left out, with their reasons.
    ``weights`` (one per shard, from ``mix``): how often a resampled stream draws each shard."""
    shards: tuple[ShardSource, ...]
    kind: str
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (shard path, reason)
    weights: tuple[float, ...] | None = None

    @property
    def counts(self) -> list[int]:
        return [s.count for s in self.shards]

    def __len__(self) -> int:
        return sum(self.counts)

    @classmethod
    def load(cls, spec: str | os.PathLike | list, kind: str, split: str | None = None) -> "ShardSet":
        """The shards ``spec`` names (a folder, a glob, a brace pattern or a list of them), checked
        to hold ``kind`` records; raises DatasetKindError naming the kind found otherwise.
        ``split`` ("train" or "test"): only that split's records (by character or photo subject,
        as the records' json and the manifests say); shards with none of them are left out."""
        if split not in (None, "train", "test"):
            raise ValueError(f"split is {split!r}: choose train, test or None (all records)")
        paths = expand_pattern(spec)
        if not paths:
            raise FileNotFoundError(f"{spec}: no shards (*.tar) found")
        shards, skipped = [], []
        for path in paths:
            source, reason = _read_source(path)
            if source is None:
                log.warning("shard %s left out: %s", path, reason)
                skipped.append((path, reason))
            else:
                shards.append(source)
        kinds = sorted({s.kind for s in shards})
        if kinds != [kind] and shards:
            wrong = [s for s in shards if s.kind != kind]
            raise DatasetKindError(f"{spec}: the dataset holds {', '.join(kinds)} records ({wrong[0].path} is "
                                   f"{wrong[0].kind}); this loader expects {kind}")
        if not shards:
            raise FileNotFoundError(f"{spec}: no usable shard (left out: {skipped})")
        if split is not None:
            shards = [kept for kept in (s.only(split) for s in shards) if kept.count]
            if not shards:
                raise FileNotFoundError(f"{spec}: no {split} records")
        return cls(tuple(shards), kind, tuple(skipped))

    @classmethod
    def mix(cls, parts: list[tuple["ShardSet", float]]) -> "ShardSet":
        """Several datasets of one kind as one, each drawn with its share of the samples: dataset
        d with weight w_d gives w_d / sum(w) of a resampled stream's samples, whatever its size and
        shard sizes (each of its shards is drawn with probability proportional to w_d / N_d, N_d its
        sample count, and a draw reads a whole shard). Weights apply to resampled streams only; an
        epoch reads every sample of every dataset once."""
        if not parts:
            raise ValueError("mix needs at least one (ShardSet, weight)")
        kinds = {part.kind for part, _ in parts}
        if len(kinds) > 1:
            raise DatasetKindError(f"cannot mix datasets of different record kinds: {', '.join(sorted(kinds))}")
        if any(not weight > 0 for _, weight in parts):
            raise ValueError(f"mix weights must be > 0, got {[weight for _, weight in parts]}")
        weights = tuple(weight / len(part) for part, weight in parts for _ in part.shards)
        return cls(tuple(s for part, _ in parts for s in part.shards), kinds.pop(),
                   tuple(x for part, _ in parts for x in part.skipped), weights)


def expand_pattern(spec) -> list[str]:
    """A folder (its *.tar), a glob, a brace pattern or a list of these, as paths or URLs -> shard
    paths or URLs, sorted and unique."""
    if isinstance(spec, (list, tuple)):
        return sorted({p for item in spec for p in expand_pattern(item)})
    spec = os.fspath(spec)
    if storage.is_dir(spec):
        return storage.glob(spec, "*.tar")
    paths = []
    for pattern in _expand_braces(spec):
        if any(c in storage.name(pattern) for c in "*?["):
            paths += storage.glob(storage.parent(pattern), storage.name(pattern))
        elif storage.exists(pattern):
            paths.append(pattern)
    return sorted(set(paths))


def _expand_braces(pattern: str) -> list[str]:
    """``a{1..3}b`` (zero-padded as written) and ``a{x,y}b``, recursively."""
    match = _BRACE.search(pattern)
    if not match:
        return [pattern]
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    if ".." in body:
        lo, hi = body.split("..", 1)
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    return [p for option in options for p in _expand_braces(head + option + tail)]


def _read_source(path: str) -> tuple[ShardSource | None, str]:
    manifest_file = path.removesuffix(".tar") + ".json"
    try:
        manifest = json.loads(storage.read_bytes(manifest_file))
    except (OSError, ValueError) as error:
        return None, f"no readable manifest {storage.name(manifest_file)} (an incomplete shard?): {error}"
    size = storage.size(path)
    if size is None:
        return None, "the tar cannot be found"
    if manifest.get("bytes") is not None and size != manifest["bytes"]:
        return None, f"the tar is {size} bytes, its manifest says {manifest['bytes']} (truncated or replaced)"
    keys = tuple(manifest.get("keys", ()))
    if len(keys) != manifest.get("count"):
        return None, f"manifest count {manifest.get('count')} != {len(keys)} keys"
    splits = manifest.get("splits")
    if splits is not None and len(splits) != len(keys):
        return None, f"manifest lists {len(splits)} splits for {len(keys)} keys"
    return ShardSource(path, storage.name(path).removesuffix(".tar"), manifest.get("schema", {}).get("name", "?"),
                       len(keys), keys, tuple(splits) if splits is not None else None), ""


def read_shard(path: str, decode: bool = False) -> Iterator[dict]:
    """The records of one shard (a path or a URL, streamed), with every rule of the safe reader."""
    return iter_shard(path, decode=decode)
