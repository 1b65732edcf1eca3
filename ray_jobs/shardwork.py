"""What both runners do: work out which shards are left, and produce one shard from its work
items with a stage (batches, per-sample timeouts, atomic write). The shard is the unit of
retry, progress and resume."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
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
    seconds: float = 0.0          # the job, after any one-off start-up of Ray
    startup_seconds: float = 0.0  # starting or joining Ray
    setup_seconds: float = 0.0    # of `seconds`, until the first shard began: workers up, stage set up
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
               + (f" (+ {self.startup_seconds:.1f} s starting Ray)" if self.startup_seconds >= 0.05 else "")
               + f"; the first shard began after {self.setup_seconds:.1f} s",
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


class SampleTimeout(BaseException):
    """A sample's deadline passed. Not an Exception, so a stage's per-sample ``except Exception``
    cannot swallow it: process_safely must see it to redo the batch one sample at a time."""


def process_safely(stage: Stage, batch: list[dict], seconds: float | None) -> list[dict]:
    """``stage.process_batch`` where one bad sample cannot sink the batch: if the batch raises or
    runs past its deadline (``seconds`` per sample, by SIGALRM), it is redone one sample at a time
    and only the failing samples become rejects. Deadlines need the main thread (where both
    runners call this); elsewhere samples run without one."""
    timed = bool(seconds) and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGALRM, _raise_timeout) if timed else None
    try:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, seconds * len(batch))
        return stage.process_batch(batch)
    except SampleTimeout:
        if len(batch) == 1:
            return [rejected(batch[0]["__key__"], f"timeout: sample took longer than {seconds:g} s")]
    except Exception as error:
        if len(batch) == 1:
            return [rejected(batch[0]["__key__"], f"{stage.name}: {type(error).__name__}: {error}")]
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return [record for item in batch for record in process_safely(stage, [item], seconds)]


def _raise_timeout(signum, frame):
    raise SampleTimeout()


class Watchdog:
    """For workers whose stage runs off the main thread (Ray actors), where no signal can stop a
    hung sample: when a batch runs past its deadline, write its keys down beside the shards and
    kill this process. The retried shard (Ray restarts the worker) then runs those keys one at a
    time, and rejects a key that hung alone. Catches hangs in native code too."""

    def __init__(self, out_dir: Path, seconds: float):
        self.directory, self.seconds = Path(out_dir) / "_watchdog", seconds
        self._armed: tuple[str, list[str], float] | None = None
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def arm(self, shard: str, keys: list[str]) -> None:
        self._armed = (shard, keys, time.monotonic() + self.seconds * len(keys))

    def disarm(self) -> None:
        self._armed = None

    def record(self, shard: str) -> dict:
        """Keys of ``shard`` that ran past the deadline before. Keys that hung alone under another
        deadline (a job resumed with a new --sample-timeout) are suspects again, not rejects."""
        path = self.directory / f"{shard}.hung"
        saved = json.loads(path.read_text()) if path.exists() else {"suspects": [], "hung": []}
        if saved.get("seconds", self.seconds) == self.seconds:
            return {"suspects": saved["suspects"], "hung": saved["hung"], "seconds": self.seconds}
        return {"suspects": saved["suspects"] + saved["hung"], "hung": [], "seconds": self.seconds}

    def forget(self, shard: str) -> None:
        (self.directory / f"{shard}.hung").unlink(missing_ok=True)
        try:
            self.directory.rmdir()  # only once no shard has a record left
        except OSError:
            pass

    def _watch(self) -> None:
        while True:
            time.sleep(0.2)
            armed = self._armed
            if armed and time.monotonic() > armed[2]:
                shard, keys, _ = armed
                record = self.record(shard)
                record["hung" if len(keys) == 1 else "suspects"] += keys
                self.directory.mkdir(parents=True, exist_ok=True)
                (self.directory / f"{shard}.hung").write_text(json.dumps(record))
                os._exit(3)  # the runner replaces the worker and retries the shard


def produce_shard(stage: Stage, index: int, items: list[dict], out_dir: Path, schema: Schema, config_hash: str,
                  versions: dict[str, str], batch_size: int, sample_timeout: float | None = None,
                  on_batch=None, watchdog: Watchdog | None = None) -> dict:
    """Run ``items`` through ``stage`` into shard ``index``; returns its manifest."""
    name = shard_name(index)
    seen = watchdog.record(name) if watchdog else {"suspects": [], "hung": []}
    hung, suspects = set(seen["hung"]), set(seen["suspects"])
    with ShardWriter(out_dir, name, schema, config_hash, versions) as writer:
        batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        for batch in batches:
            if any(item["__key__"] in suspects for item in batch):
                groups = [[item] for item in batch]  # a batch that hung before: one sample at a time
            else:
                groups = [batch]
            for group in groups:
                if group[0]["__key__"] in hung:
                    writer.write(rejected(group[0]["__key__"],
                                          f"timeout: sample took longer than {sample_timeout:g} s (worker replaced)"))
                    continue
                if watchdog:
                    watchdog.arm(name, [item["__key__"] for item in group])
                records = process_safely(stage, group, None if watchdog else sample_timeout)
                if watchdog:
                    watchdog.disarm()
                for record in records:
                    writer.write(record)
            if on_batch is not None:
                on_batch(len(batch))
    for stale in Path(out_dir).glob(f"{name}.*.tar.tmp"):  # left by a writer that died on this shard
        stale.unlink(missing_ok=True)
    if watchdog:
        watchdog.forget(name)
    return writer.manifest
