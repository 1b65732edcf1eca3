"""The stage contract (shared/DESIGN.md): one class with ``setup()``, ``process_batch(records)``,
``teardown()`` and declared resources. The same class runs in-process and on Ray. A failure on
one sample is returned as a record with ``status`` and ``error``, never raised."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 1024


class Stage:
    name = "stage"
    resources = Resources()

    def setup(self) -> None:
        """Acquire what the stage holds across batches (models, renderers)."""

    def process_batch(self, records: list[dict]) -> list[dict]:
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what setup() acquired."""


def rejected(key: str, error: str) -> dict:
    """The record of a sample that failed: it lands in its shard's rejects list with the reason."""
    return {"__key__": key, "status": "rejected", "error": error}


class StageUnavailable(BaseException):
    """The stage cannot work on this machine at all (its renderer does not start): the job
    stops with this message instead of rejecting every sample. Not an Exception, so that no
    per-sample ``except Exception`` turns it into a reject."""


def each_or_reject(stage_name: str, items: list[dict], make) -> list[dict]:
    """``make(item)`` for every item; an item that raises becomes a reject carrying the error,
    and the others go on."""
    out = []
    for item in items:
        try:
            out.append(make(item))
        except Exception as error:  # one bad sample becomes data, not a failed batch
            out.append(rejected(item["__key__"], f"{stage_name}: {type(error).__name__}: {error}"))
    return out
