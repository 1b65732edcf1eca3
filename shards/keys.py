"""Sample keys, per-sample seeds and the train/test split: all pure functions of ids, so any
sample can be found, re-rendered and assigned to the same split on any machine."""
from __future__ import annotations

import hashlib
import re

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
SHARD_PREFIX = "shard-"


def sample_key(character: int, pose: int, view: int) -> str:
    """The key of one synthetic pair, e.g. ``c0003-p0012-v0``."""
    return f"c{character:04d}-p{pose:04d}-v{view}"


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid WebDataset key (no dots, no path parts), else raise."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"invalid sample key {key!r}: use letters, digits, '-' and '_' only")
    return key


def _hash64(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # non-negative, fits int64


def sample_seed(job_seed: int, key: str) -> int:
    """The seed of one sample: a hash of the job seed and its key, independent of order."""
    return _hash64("sample", job_seed, key)


def split_of(entity_id: str, test_fraction: float = 0.2) -> str:
    """'train' or 'test' by a hash of a character (or photo subject) id, so no entity is in both."""
    bucket = _hash64("split", entity_id) % 10_000
    return "test" if bucket < round(test_fraction * 10_000) else "train"


def shard_name(index: int) -> str:
    """Deterministic shard names (``shard-000042``), so a re-run finds the shards it already wrote."""
    return f"{SHARD_PREFIX}{index:06d}"
