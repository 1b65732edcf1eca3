"""The stream of one rank's samples, the torch IterableDataset around it and a resumable loader.

``ShardStream`` reads, for an (epoch, worker), exactly the samples the plan (``split.py``) gives
that worker, with the safe reader's rules, and decodes them to arrays (``kinds.py``).
``torch_dataset(stream)`` is the IterableDataset a torch DataLoader runs in its workers (worker id
from ``torch.utils.data.get_worker_info()``; rank and world size are the stream's, passed in
explicitly). ``resampled=True``: shards drawn with replacement by seed, endlessly, for step-based
training (split.ResampledPlan; same resume rule, no epochs). ``ShardLoader`` is that DataLoader with the batch size of the plan, counting the
batches it hands out, so ``state_dict()`` (seed, epoch, batches done, samples consumed per
"rank/worker") can go into a checkpoint and ``load_state_dict()`` resumes mid-epoch exactly.

A bad shard never crashes training nor leaves a rank short (which would hang DDP): a shard whose
manifest is missing or disagrees with its tar is left out when the ShardSet is loaded (the same on
every rank); one that turns out corrupt while it is read is logged (naming it) and counted in
``stream.problems``, and each of its samples this worker owed is replaced by the worker's previous
good sample (or its next one), marked by ``__failed__`` (the failed shard; "" for a real sample),
so every rank still yields its planned number of batches. Only a worker whose whole share fails
raises ShardError. torch is imported inside functions only (the layering rule)."""
from __future__ import annotations

import functools
import logging
from collections import OrderedDict

import numpy as np

from shards.reader import ShardError, decode_member
from shards.schema import schema_named
from train.data.sources import ShardSet, read_shard
from train.data.split import EpochPlan, ResampledPlan, plan_epoch, plan_resampled

log = logging.getLogger(__name__)


class ShardStream:
    """One rank's view of a ShardSet: what each of its workers reads in an epoch, decoded."""

    def __init__(self, source: ShardSet, decoder, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool = False, resampled: bool = False):
        if getattr(decoder, "kind", source.kind) != source.kind:
            raise ValueError(f"a {decoder.kind} decoder for a dataset of {source.kind} records")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in a world of {world_size}")
        if source.weights is not None and not resampled:
            raise ValueError("a mix with weights draws shards by weight: use resampled=True (an epoch reads "
                             "every sample once, so weights would not apply)")
        self.source, self.decoder, self.batch_size = source, decoder, batch_size
        self.rank, self.world_size, self.seed, self.drop_last = rank, world_size, seed, drop_last
        self.resampled = resampled  # shards drawn with replacement, endlessly (split.ResampledPlan)
        self.schema = schema_named(source.kind)
        self.problems: list[str] = []  # shards and samples that failed in this process, with reasons
        self._repeats = RepeatedMembers()

    def plan(self, epoch: int, num_workers: int = 1) -> EpochPlan | ResampledPlan:
        if self.resampled:
            return plan_resampled(self.source.counts, self.seed, self.world_size, num_workers, self.batch_size,
                                  self.source.weights)
        return plan_epoch(self.source.counts, self.seed, epoch, self.world_size, num_workers,
                          self.batch_size, self.drop_last)

    def samples(self, epoch: int, num_workers: int = 1, worker: int = 0, start_batch: int = 0):
        """The decoded samples of one worker's share of the epoch, in plan order."""
        items = self.plan(epoch, num_workers).worker_items(self.rank, worker, start_batch)
        previous, owed = None, []
        for shard_index, run in _runs(items):
            for sample, failed in self._read_run(shard_index, run, epoch):
                if failed:
                    if previous is None:
                        owed.append(failed)
                        if len(owed) > len(self.source):  # an endless (resampled) share that never decodes
                            raise ShardError(f"rank {self.rank} worker {worker}: {len(owed)} samples in a row "
                                             f"failed ({failed} last); see the warnings")
                    else:
                        yield {**previous, "__failed__": failed}
                    continue
                previous = sample
                for failed_shard in owed:
                    yield {**sample, "__failed__": failed_shard}
                owed = []
                yield sample
        if owed:
            raise ShardError(f"rank {self.rank} worker {worker}: every sample of its share failed ({owed[0]} first)")

    def _read_run(self, shard_index: int, indices: list[int], epoch: int):
        """(sample, "") for each wanted record of one shard, (None, shard path) for each that failed."""
        shard = self.source.shards[shard_index]
        wanted = {shard.position(i): shard.keys[i] for i in indices}  # place in the tar -> key
        done, last = set(), max(wanted)
        try:
            for index, raw in enumerate(read_shard(shard.path, decode=False)):
                if index in wanted:
                    if raw["__key__"] != wanted[index]:
                        raise ShardError(f"{shard.path}: record {index} is {raw['__key__']!r}, its manifest "
                                         f"says {wanted[index]!r}")
                    done.add(index)
                    try:
                        sample = self._decode(shard.path, raw, epoch)
                    except Exception as error:  # one bad record: only it is replaced
                        self._problem(f"{shard.path}: sample {raw['__key__']} skipped: {error}")
                        yield None, shard.path
                    else:
                        yield sample, ""
                if index >= last:
                    break
            else:
                if len(done) < len(wanted):
                    raise ShardError(f"{shard.path}: holds fewer records than its manifest's {shard.count}")
        except Exception as error:
            self._problem(f"shard {shard.path} skipped ({len(wanted) - len(done)} samples replaced): {error}")
            for _ in range(len(wanted) - len(done)):
                yield None, shard.path

    def _decode(self, path: str, raw: dict, epoch: int) -> dict:
        record = {"__key__": raw["__key__"]}
        repeated = getattr(self.decoder, "repeated_members", ())
        for ext, data in raw.items():
            if not ext.startswith("__"):
                try:
                    record[ext] = self._repeats.get(data, ext) if ext in repeated else decode_member(ext, data)
                except Exception as error:
                    raise ShardError(f"member {raw['__key__']}.{ext} does not decode: {error}") from error
        problems = self.schema.validate(record)
        if problems:
            raise ShardError(f"not a valid {self.schema.tag} record: {'; '.join(problems)}")
        return {**self.decoder(record, epoch), "__shard__": path, "__failed__": ""}

    def _problem(self, message: str) -> None:
        log.warning("%s", message)
        self.problems.append(message)


class RepeatedMembers:
    """Decoded members whose bytes recur from record to record (a character's standardized render
    is the same in every one of its pairs, and a shard holds a character's pairs together): the
    same bytes give the same read-only array object, decoded once, so a decoder may also keep what
    it makes of it (``PairDecoder`` does). Keyed by the bytes themselves, the last ``size`` of them."""

    def __init__(self, size: int = 8):
        self.size, self.items = size, OrderedDict()

    def get(self, data: bytes, ext: str):
        key = (ext, data)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = decode_member(ext, data)
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
        self.items[key] = value
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


def _runs(items):
    """(shard, [indices]) for each stretch of one shard read in one pass (ascending indices)."""
    shard, run = None, []
    for s, i in items:
        if run and (s != shard or i <= run[-1]):
            yield shard, run
            run = []
        shard = s
        run.append(i)
    if run:
        yield shard, run


def _to_torch(sample: dict) -> dict:
    """Arrays to tensors without a copy. Arrays a decoder shares between samples are read-only;
    their tensors only ever reach the DataLoader's collate, which copies them into the batch, so
    torch's warning about tensors over read-only memory is silenced here."""
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in sample.items()}


@functools.cache
def _torch_dataset_class():
    """The IterableDataset class, made on first use so that importing this module needs no torch."""
    import torch.utils.data

    class TorchShardDataset(torch.utils.data.IterableDataset):
        """A ShardStream's share for the DataLoader worker running it (0 of 1 without workers)."""

        def __init__(self, stream: ShardStream, epoch: int = 0, start_batch: int = 0):
            super().__init__()
            self.stream, self.epoch, self.start_batch = stream, epoch, start_batch

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
            for sample in self.stream.samples(self.epoch, num_workers, worker, self.start_batch):
                yield _to_torch(sample)

    TorchShardDataset.__module__, TorchShardDataset.__qualname__ = __name__, "TorchShardDataset"
    return TorchShardDataset


def __getattr__(name: str):  # ``train.data.loader.TorchShardDataset`` (pickling under spawn) imports torch only then
    if name == "TorchShardDataset":
        return _torch_dataset_class()
    raise AttributeError(name)


def torch_dataset(stream: ShardStream, epoch: int = 0, start_batch: int = 0):
    """The torch IterableDataset of ``stream``; use it with ``DataLoader(batch_size=stream.batch_size)``."""
    return _torch_dataset_class()(stream, epoch, start_batch)


class ShardLoader:
    """A DataLoader over a ShardStream that knows where it is: each ``iter()`` runs the rest of the
    current epoch, then moves to the next; ``state_dict()`` after any batch resumes exactly there."""

    STATE_FIELDS = ("world_size", "num_workers", "batch_size", "drop_last", "seed", "resampled")

    def __init__(self, stream: ShardStream, num_workers: int = 0, **dataloader_options):
        if {"batch_size", "persistent_workers", "in_order", "drop_last"} & set(dataloader_options):
            raise ValueError("batch_size and drop_last are the stream's, workers restart each epoch and "
                             "batches come in order (the plan relies on all three)")
        self.stream, self.num_workers, self.options = stream, num_workers, dataloader_options
        self.epoch, self.batches_done = 0, 0

    def plan(self) -> EpochPlan | ResampledPlan:
        return self.stream.plan(self.epoch, max(1, self.num_workers))

    def __len__(self) -> int:
        """Batches in the current epoch (the same on every rank); a resampled stream has no length."""
        if self.stream.resampled:
            raise TypeError("a resampled loader is endless")
        return self.plan().batches

    def __iter__(self):
        from torch.utils.data import DataLoader

        dataset = torch_dataset(self.stream, self.epoch, self.batches_done)
        loader = DataLoader(dataset, batch_size=self.stream.batch_size, num_workers=self.num_workers,
                            drop_last=False, **self.options)
        for batch in loader:
            self.batches_done += 1
            yield batch
        if self.stream.resampled:
            raise RuntimeError("a resampled stream ended")  # unreachable: its workers never stop
        if self.batches_done != len(self):
            raise RuntimeError(f"epoch {self.epoch}: {self.batches_done} batches, the plan says {len(self)}")
        self.epoch, self.batches_done = self.epoch + 1, 0

    def state_dict(self) -> dict:
        """Where the loader is, for a checkpoint (any rank's state is every rank's: they run in step)."""
        s = self.stream
        return {"epoch": self.epoch, "batches": self.batches_done, "seed": s.seed, "world_size": s.world_size,
                "num_workers": max(1, self.num_workers), "batch_size": s.batch_size, "drop_last": s.drop_last,
                "resampled": s.resampled,
                "consumed": self.plan().consumed(self.batches_done)}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        differ = [f"{k}: saved {state.get(k)!r}, now {mine[k]!r}" for k in self.STATE_FIELDS if state.get(k) != mine[k]]
        if differ:
            raise ValueError("cannot resume exactly with a different loader: " + "; ".join(differ))
        self.epoch, self.batches_done = int(state["epoch"]), int(state["batches"])
        if not self.stream.resampled and self.batches_done >= len(self):
            self.epoch, self.batches_done = self.epoch + 1, 0
