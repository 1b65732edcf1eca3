"""Where a dataset's shards are and what they hold, known before any tar is opened: a dataset is
given as a folder, a glob or a brace pattern (``shard-{000000..000009}.tar``) of local paths, and
each shard's manifest (NAME.json beside NAME.tar) gives its record kind, count and keys. So a
dataset of the wrong kind is refused before training starts, and the split (``split.py``) can cut
at the sample level from the counts alone.

A shard whose manifest is missing (the writer writes it last: the shard is incomplete) or does not
match its tar's size (truncated or replaced) is left out with a logged reason and listed in
``ShardSet.skipped``: never read, never a crash. Opening a shard is ``read_shard`` alone, so other
storage (fsspec urls) is one function to extend."""
from __future__ import annotations

import glob
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from shards.reader import iter_shard

log = logging.getLogger(__name__)

_BRACE = re.compile(r"\{([^{}]*)\}")


class DatasetKindError(ValueError):
    """A dataset whose record kind is not the one the loader decodes."""


@dataclass(frozen=True)
class ShardSource:
    """One shard as its manifest describes it."""
    path: str
    name: str
    kind: str
    count: int
    keys: tuple[str, ...]


@dataclass(frozen=True)
class ShardSet:
    """A dataset's usable shards (in name order) and the ones left out, with their reasons."""
    shards: tuple[ShardSource, ...]
    kind: str
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (shard path, reason)

    @property
    def counts(self) -> list[int]:
        return [s.count for s in self.shards]

    def __len__(self) -> int:
        return sum(self.counts)

    @classmethod
    def load(cls, spec: str | os.PathLike | list, kind: str) -> "ShardSet":
        """The shards ``spec`` names (a folder, a glob, a brace pattern or a list of them), checked
        to hold ``kind`` records; raises DatasetKindError naming the kind found otherwise."""
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
        return cls(tuple(shards), kind, tuple(skipped))


def expand_pattern(spec) -> list[str]:
    """A folder (its *.tar), a glob, a brace pattern or a list of these -> shard paths, sorted and unique."""
    if isinstance(spec, (list, tuple)):
        return sorted({p for item in spec for p in expand_pattern(item)})
    spec = os.fspath(spec)
    if Path(spec).is_dir():
        return sorted(str(p) for p in Path(spec).glob("*.tar"))
    paths = []
    for pattern in _expand_braces(spec):
        if any(c in pattern for c in "*?["):
            paths += glob.glob(pattern)
        elif Path(pattern).exists() or pattern == spec:
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
    tar = Path(path)
    manifest_file = tar.with_suffix(".json")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError) as error:
        return None, f"no readable manifest {manifest_file.name} (an incomplete shard?): {error}"
    try:
        size = tar.stat().st_size
    except OSError as error:
        return None, f"cannot stat the tar: {error}"
    if manifest.get("bytes") is not None and size != manifest["bytes"]:
        return None, f"the tar is {size} bytes, its manifest says {manifest['bytes']} (truncated or replaced)"
    keys = tuple(manifest.get("keys", ()))
    if len(keys) != manifest.get("count"):
        return None, f"manifest count {manifest.get('count')} != {len(keys)} keys"
    return ShardSource(str(tar), tar.stem, manifest.get("schema", {}).get("name", "?"), len(keys), keys), ""


def read_shard(path: str, decode: bool = False) -> Iterator[dict]:
    """The records of one shard, with every rule of the safe reader; the one place shards are
    opened (fsspec urls: extend here)."""
    return iter_shard(path, decode=decode)
