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

from shards import storage
from shards.keys import shard_name
from shards.reader import ShardError, decode_member, iter_shard
from shards.stage import Stage, reject_reason, rejected
from shards.writer import ShardWriter, read_manifest, shard_is_complete


@dataclass
class RunSummary:
    out_dir: str
    shards_total: int = 0
    shards_skipped: int = 0
    done: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)  # reject category -> count
    examples: dict = field(default_factory=dict)       # reject category -> one of its errors (the same on any runner)
    failed: list = field(default_factory=list)         # shards given up on (their workers kept dying)
    seconds: float = 0.0          # the job, after any one-off start-up of Ray
    startup_seconds: float = 0.0  # starting or joining Ray
    setup_seconds: float = 0.0    # of `seconds`, until the first shard began: workers up, stage set up
    runner: str = "local"
    workers: int = 0              # Ray workers that ran the shards left (0: none were left)
    storage_retries: dict = field(default_factory=dict)  # operation -> transient storage errors retried (this process)

    def add(self, manifest: dict) -> None:
        """Count a finished shard from its manifest."""
        self.done += manifest["count"]
        self.rejected += len(manifest["rejects"])
        for reject in manifest["rejects"]:
            reason = reject_reason(reject["error"])
            self.reasons[reason] += 1
            self.examples[reason] = min(self.examples.get(reason, reject["error"]), reject["error"])

    def lines(self) -> list[str]:
        rate = self.done / self.seconds if self.seconds else 0.0
        out = [f"done: {self.done} samples in {self.shards_total} shards "
               f"({self.shards_skipped} already complete, skipped) on the {self.runner} runner"
               + (f" ({self.workers} workers)" if self.workers else "")
               + f"; {rate:.1f} samples/s over {self.seconds:.1f} s"
               + (f" (+ {self.startup_seconds:.1f} s starting Ray)" if self.startup_seconds >= 0.05 else "")
               + f"; the first shard began after {self.setup_seconds:.1f} s",
               f"rejected: {self.rejected}"]
        out += [f"  {n} x {reason} (e.g. {self.examples[reason]})" for reason, n in self.reasons.most_common()]
        if self.failed:
            out.append(f"FAILED: {len(self.failed)} shards whose workers kept dying ({', '.join(self.failed[:5])}"
                       f"{' ...' if len(self.failed) > 5 else ''}); re-run the same command to retry them")
        if self.storage_retries:
            out.append(f"storage: {sum(self.storage_retries.values())} transient errors retried ("
                       + ", ".join(f"{op} {n}" for op, n in sorted(self.storage_retries.items())) + ")")
        out.append(f"shards: {self.out_dir}")
        return out


def plan_shards(items: list[dict], per_shard: int) -> list[list[dict]]:
    return [items[i:i + per_shard] for i in range(0, len(items), per_shard)]


def shards_left(out_dir: str | Path, shards: list[list[dict]], config_hash: str, summary: RunSummary) -> list[int]:
    """Indices of the shards still to do (``out_dir`` a path or a URL); the finished ones are
    counted into ``summary``, and leftovers of unfinished attempts at the shards to redo are
    removed: temporary files, and a tar or manifest not part of a complete shard (the manifest
    first, so nothing reads as complete meanwhile; the writer's create-only upload needs the
    place free)."""
    todo = []
    for i in range(len(shards)):
        if shard_is_complete(out_dir, shard_name(i), config_hash):
            summary.add(read_manifest(out_dir, shard_name(i)))
        else:
            todo.append(i)
            for stale in [*storage.glob(out_dir, f"{shard_name(i)}.*tmp"), storage.join(out_dir, f"{shard_name(i)}.json"),
                          storage.join(out_dir, f"{shard_name(i)}.tar")]:
                storage.remove(stale)
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
    """For workers whose samples cannot be stopped by a signal (Ray workers; a hang in native
    code): when a batch runs past its deadline, write its keys down beside the shards and kill
    this process. The retried shard (the runner replaces the worker) then runs those keys one at
    a time, and rejects a key that hung alone. One per process (``Watchdog.of_process``): a Ray
    worker that runs many shards or stages keeps one thread."""

    _current: "Watchdog | None" = None

    def __init__(self):
        self.directory, self.seconds = ".", 0.0
        self._armed: tuple[str, list[str], float] | None = None
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    @classmethod
    def of_process(cls, out_dir: str, seconds: float) -> "Watchdog":
        """This process's watchdog, pointed at ``out_dir`` (a path or a URL, so that a shard retried
        on another node finds the record) with deadline ``seconds`` per sample."""
        if cls._current is None:
            cls._current = cls()
        cls._current.directory, cls._current.seconds = storage.join(out_dir, "_watchdog"), seconds
        return cls._current

    def arm(self, shard: str, keys: list[str]) -> None:
        self._armed = (shard, keys, time.monotonic() + self.seconds * len(keys))

    def disarm(self) -> None:
        self._armed = None

    def record(self, shard: str) -> dict:
        """Keys of ``shard`` that ran past the deadline before. Keys that hung alone under another
        deadline (a job resumed with a new deadline) are suspects again, not rejects."""
        path = storage.join(self.directory, f"{shard}.hung")
        saved = json.loads(storage.read_bytes(path)) if storage.exists(path) else {"suspects": [], "hung": []}
        if saved.get("seconds", self.seconds) == self.seconds:
            return {"suspects": saved["suspects"], "hung": saved["hung"], "seconds": self.seconds}
        return {"suspects": saved["suspects"] + saved["hung"], "hung": [], "seconds": self.seconds}

    def forget(self, shard: str) -> None:
        storage.remove(storage.join(self.directory, f"{shard}.hung"))
        if not storage.is_remote(self.directory):
            try:
                os.rmdir(self.directory)  # only once no shard has a record left
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
                storage.write_bytes(storage.join(self.directory, f"{shard}.hung"), json.dumps(record).encode())
                os._exit(3)  # the runner replaces the worker and retries the shard


class InputShards:
    """The input records of work items, read by the runner for the stage: an item's ``inputs``
    ([shard path, key] pairs) become the records themselves, with the members the stage
    ``decodes`` decoded (by the safe reader's rules) and all others as their raw bytes. Each
    input shard is read once while it is in use; a few are kept, not the dataset."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._shards: dict[str, dict[str, dict]] = {}

    def resolve(self, item: dict, decodes: frozenset) -> dict:
        if "inputs" not in item:
            return item
        return {**item, "inputs": [self._record(path, key, decodes) for path, key in item["inputs"]]}

    def _record(self, path: str, key: str, decodes: frozenset) -> dict:
        if path not in self._shards:
            if len(self._shards) >= self.keep:
                self._shards.pop(next(iter(self._shards)))
            self._shards[path] = {r["__key__"]: r for r in iter_shard(path, decode=False)}
        raw = self._shards[path].get(key)
        if raw is None:
            raise ShardError(f"{path}: no record {key!r}")
        record = dict(raw)
        for member in decodes & set(raw):
            try:
                record[member] = decode_member(member, raw[member])
            except Exception as error:  # a corrupt member is a corrupt input, named
                raise ShardError(f"{path}: member {key}.{member} does not decode: {error}") from error
        return record


@dataclass(frozen=True)
class ShardJob:
    """What a worker needs besides the stage to write shards: where, and what goes into manifests."""
    out_dir: str
    config_hash: str
    versions: dict
    storage: dict = field(default_factory=dict)  # the driver's non-secret storage settings (shards.storage.configure)


def _with_inputs(inputs: InputShards, items: list[dict], decodes: frozenset) -> list[dict]:
    """Items with their inputs read; an item whose input cannot be read becomes a reject."""
    out = []
    for item in items:
        try:
            out.append(inputs.resolve(item, decodes))
        except ShardError as error:
            out.append(rejected(item["__key__"], f"input: {error}"))
    return out


def produce_shard(stage: Stage, job: ShardJob, index: int, items: list[dict], inputs: InputShards,
                  on_batch=None, watchdog: Watchdog | None = None) -> dict:
    """Run ``items`` through ``stage`` into shard ``index``; returns its manifest."""
    name, out_dir, timeout = shard_name(index), job.out_dir, stage.sample_timeout
    storage.configure(**job.storage)  # a worker on another node: the driver's storage settings
    seen = watchdog.record(name) if watchdog else {"suspects": [], "hung": []}
    hung, suspects = set(seen["hung"]), set(seen["suspects"])
    with ShardWriter(out_dir, name, stage.schema, job.config_hash, job.versions) as writer:
        batches = [items[i:i + stage.batch_size] for i in range(0, len(items), stage.batch_size)]
        for batch in batches:
            if any(item["__key__"] in suspects for item in batch):
                groups = [[item] for item in batch]  # a batch that hung before: one sample at a time
            else:
                groups = [batch]
            for group in groups:
                if group[0]["__key__"] in hung:
                    writer.write(rejected(group[0]["__key__"],
                                          f"timeout: sample took longer than {timeout:g} s (worker replaced)"))
                    continue
                ready = []
                for record in _with_inputs(inputs, group, stage.decodes):
                    if record.get("status", "ok") == "ok":
                        ready.append(record)
                    else:
                        writer.write(record)  # its input could not be read
                if not ready:
                    continue
                if watchdog:
                    watchdog.arm(name, [item["__key__"] for item in ready])
                records = process_safely(stage, ready, None if watchdog else timeout)
                if watchdog:
                    watchdog.disarm()
                for record in records:
                    writer.write(record)
            if on_batch is not None:
                on_batch(len(batch))
    for stale in storage.glob(out_dir, f"{name}.*.tar.tmp"):  # left by a writer that died on this shard
        storage.remove(stale)
    if watchdog:
        watchdog.forget(name)
    return writer.manifest
