"""What both runners do: work out which shards are left, and produce one shard from its work
items with a stage (batches, per-sample timeouts, atomic write). The shard is the unit of
retry, progress and resume."""
from __future__ import annotations

import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from shards.keys import shard_name
from shards.schema import Schema
from shards.stage import Stage, rejected
from shards.writer import ShardWriter, read_manifest, shard_is_complete


@dataclass
class RunSummary:
    out_dir: str
    shards_total: int = 0
    shards_skipped: int = 0
    done: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0          # the work, after any one-off start-up
    startup_seconds: float = 0.0  # starting or joining Ray
    runner: str = "local"

    def add(self, manifest: dict) -> None:
        """Count a finished shard from its manifest."""
        self.done += manifest["count"]
        self.rejected += len(manifest["rejects"])
        self.reasons.update(r["error"] for r in manifest["rejects"])

    def lines(self) -> list[str]:
        rate = self.done / self.seconds if self.seconds else 0.0
        out = [f"done: {self.done} samples in {self.shards_total} shards "
               f"({self.shards_skipped} already complete, skipped) on the {self.runner} runner; "
               f"{rate:.1f} samples/s over {self.seconds:.1f} s"
               + (f" (+ {self.startup_seconds:.1f} s starting Ray)" if self.startup_seconds else ""),
               f"rejected: {self.rejected}"]
        out += [f"  {n} x {reason}" for reason, n in self.reasons.most_common()]
        out.append(f"shards: {self.out_dir}")
        return out


def plan_shards(items: list[dict], per_shard: int) -> list[list[dict]]:
    return [items[i:i + per_shard] for i in range(0, len(items), per_shard)]


def shards_left(out_dir: Path, shards: list[list[dict]], config_hash: str, summary: RunSummary) -> list[int]:
    """Indices of the shards still to do; the finished ones are counted into ``summary``, and
    leftovers of unfinished attempts at the shards to redo are removed."""
    todo = []
    for i in range(len(shards)):
        if shard_is_complete(out_dir, shard_name(i), config_hash):
            summary.add(read_manifest(out_dir, shard_name(i)))
        else:
            todo.append(i)
            for stale in Path(out_dir).glob(f"{shard_name(i)}.*tmp"):
                stale.unlink(missing_ok=True)
    summary.shards_total, summary.shards_skipped = len(shards), len(shards) - len(todo)
    return todo


class SampleTimeout(Exception):
    pass


def _process_with_timeout(stage: Stage, batch: list[dict], seconds: float | None) -> list[dict]:
    """``stage.process_batch`` under a SIGALRM deadline of ``seconds`` per sample. A batch that
    runs out of time is redone one sample at a time, so only the hanging samples are rejected.
    Works where signals can be delivered (the main thread); elsewhere runs without a deadline."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        return stage.process_batch(batch)

    def alarm(signum, frame):
        raise SampleTimeout()

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds * len(batch))
            return stage.process_batch(batch)
        except SampleTimeout:
            if len(batch) == 1:
                return [rejected(batch[0]["__key__"], f"timeout: sample took longer than {seconds:g} s")]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return [record for item in batch for record in _process_with_timeout(stage, [item], seconds)]
    finally:
        signal.signal(signal.SIGALRM, previous)


def produce_shard(stage: Stage, index: int, items: list[dict], out_dir: Path, schema: Schema, config_hash: str,
                  versions: dict[str, str], batch_size: int, sample_timeout: float | None = None,
                  on_batch=None) -> dict:
    """Run ``items`` through ``stage`` into shard ``index``; returns its manifest."""
    with ShardWriter(out_dir, shard_name(index), schema, config_hash, versions) as writer:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            for record in _process_with_timeout(stage, batch, sample_timeout):
                writer.write(record)
            if on_batch is not None:
                on_batch(len(batch))
    return writer.manifest
