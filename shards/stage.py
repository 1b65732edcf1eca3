"""The stage contract: one class with ``setup()``, ``process_batch(records)``, ``teardown()`` and
what it declares; the same instance runs in-process (``--runner local``) and on Ray.

A stage declares, per instance and from its config, what the runner needs to know:

- ``schema``: the record kind it writes;
- ``resources``: what one worker needs (CPUs, GPUs, memory); Ray sizes the worker pool by them
  and gives each GPU worker its own device;
- ``batch_size``: records per ``process_batch`` call;
- ``sample_timeout``: seconds one sample may take before it is rejected (None: no deadline);
- ``decodes``: input members the runner decodes before handing records over; every other
  member arrives as its raw bytes, so a stage passes members through untouched by returning them;
- ``packages``: packages beyond the base ones whose versions shape the output bytes (manifests).

``with_(...)`` returns a copy with some of these changed (e.g. more GPUs on a bigger cluster).
A sample that fails becomes a record with ``status`` and ``error`` (and any fields of the
stage's verdict), never an exception: see ``rejected``."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from shards.schema import Schema

DECLARED = ("schema", "resources", "batch_size", "sample_timeout", "decodes", "packages")


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 1024


class Stage:
    name = "stage"
    schema: Schema | None = None
    resources = Resources()
    batch_size = 16
    sample_timeout: float | None = None
    decodes: frozenset = frozenset()
    packages: tuple = ()

    def setup(self) -> None:
        """Acquire what the stage holds across batches (models, renderers)."""

    def process_batch(self, records: list[dict]) -> list[dict]:
        """Records in (work items, with any ``inputs`` resolved to input records) -> output
        records or rejects, one per input record."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what setup() acquired."""

    @property
    def stateless(self) -> bool:
        """A stage that holds nothing across batches runs as plain Ray tasks, not actors."""
        return type(self).setup is Stage.setup and type(self).teardown is Stage.teardown

    def with_(self, **changes) -> "Stage":
        """A copy of this stage with some declarations changed: ``stage.with_(batch_size=4)``."""
        unknown = sorted(set(changes) - set(DECLARED))
        if unknown:
            raise TypeError(f"{self.name}: cannot change {unknown}; a stage declares {', '.join(DECLARED)}")
        changed = copy.copy(self)
        for name, value in changes.items():
            setattr(changed, name, value)
        return changed


def rejected(key: str, error: str, **fields) -> dict:
    """The record of a sample that failed: it lands in its shard's rejects list with the reason
    and any ``fields`` of the verdict (scores, measurements; JSON values)."""
    return {"__key__": key, "status": "rejected", "error": error, **fields}


def reject_reason(error: str) -> str:
    """The category of a reject: its error up to the first colon ("render", "timeout", "input")."""
    return error.split(":", 1)[0]


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
