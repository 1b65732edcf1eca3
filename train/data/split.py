"""Which (rank, worker) reads which samples in an epoch: a pure function of the manifests' counts
and (seed, epoch, world_size, num_workers, batch_size, drop_last), the same on every machine.

The rule, and why:

1. The shards are shuffled by (seed, epoch); the epoch's samples are the shards' (shard, index)
   in that order.
2. **Equal batches per rank by dropping, never repeating**: the last ``N mod world_size`` samples
   of that order are dropped (``drop_last``: also each rank's last partial batch), and each rank
   takes a contiguous stretch of ``n = N // world_size``. Every rank then has the same
   ``ceil(n / batch_size)`` batches (DDP never waits on a rank that ran out), every sample is read
   at most once per epoch, and the dropped ones (fewer than world_size, plus partial batches with
   drop_last) are listed in ``EpochPlan.dropped``. A different tail is dropped each epoch, as the
   shard order changes. Repeating samples instead would give some samples double weight.
3. **Batches dealt round-robin to workers**: batch j of a rank is made by worker ``j % num_workers``
   (the order a torch DataLoader collects from its workers), so the DataLoader yields the rank's
   batches 0, 1, 2, ... in order. Each worker's batches come from one contiguous piece of the
   rank's stretch, so a worker opens only the shards of its piece. The last (partial) batch is
   the last batch of its worker, so DataLoader batching within a worker is the plan's batching.
4. **Resume**: after t batches, the remaining batches t..T-1 are dealt again from worker 0
   (batch j to worker ``(j - t) % num_workers``); each is the same samples as before, so a loader
   restored at t yields exactly the remaining batches of the uninterrupted run, in order. This
   needs the same world_size, num_workers and batch_size (the loader refuses a state otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

Item = tuple[int, int]  # (shard index in the ShardSet, record index in the shard)


@dataclass(frozen=True)
class EpochPlan:
    counts: tuple[int, ...]
    seed: int
    epoch: int
    world_size: int
    num_workers: int
    batch_size: int
    drop_last: bool = False

    @cached_property
    def shard_order(self) -> tuple[int, ...]:
        rng = np.random.default_rng([self.seed, self.epoch, 0x5A4D])
        return tuple(int(i) for i in rng.permutation(len(self.counts)))

    @cached_property
    def _samples(self) -> list[Item]:
        return [(s, i) for s in self.shard_order for i in range(self.counts[s])]

    @cached_property
    def per_rank(self) -> int:
        n = len(self._samples) // self.world_size
        return n - n % self.batch_size if self.drop_last else n

    @property
    def batches(self) -> int:
        """Batches per rank (the same on every rank)."""
        return -(-self.per_rank // self.batch_size)

    @cached_property
    def dropped(self) -> list[Item]:
        used = {item for rank in range(self.world_size) for item in self.rank_items(rank)}
        return [item for item in self._samples if item not in used]

    def rank_items(self, rank: int) -> list[Item]:
        n = len(self._samples) // self.world_size
        return self._samples[rank * n: rank * n + self.per_rank]

    def _batch_sizes(self) -> list[int]:
        full, rest = divmod(self.per_rank, self.batch_size)
        return [self.batch_size] * full + ([rest] if rest else [])

    def batch_items(self, rank: int, batch: int) -> list[Item]:
        """The samples of a rank's batch ``batch``: the next piece of its worker's stretch."""
        sizes, k = self._batch_sizes(), self.num_workers
        owner = batch % k
        start = sum(size for j, size in enumerate(sizes) if j % k < owner)  # stretches of workers before
        start += sum(sizes[j] for j in range(owner, batch, k))             # this worker's earlier batches
        return self.rank_items(rank)[start:start + sizes[batch]]

    def worker_items(self, rank: int, worker: int, start_batch: int = 0) -> list[Item]:
        """What worker ``worker`` of ``rank`` reads, in order, when the epoch starts at ``start_batch``."""
        if not (0 <= rank < self.world_size and 0 <= worker < self.num_workers):
            raise ValueError(f"rank {rank}/{self.world_size}, worker {worker}/{self.num_workers} out of range")
        return [item for j in range(start_batch + worker, self.batches, self.num_workers)
                for item in self.batch_items(rank, j)]

    def consumed(self, batches_done: int) -> dict[str, int]:
        """Samples consumed per "rank/worker" after ``batches_done`` batches of every rank (from batch 0)."""
        sizes = self._batch_sizes()
        return {f"{r}/{w}": sum(sizes[j] for j in range(w, min(batches_done, self.batches), self.num_workers))
                for r in range(self.world_size) for w in range(self.num_workers)}


def plan_epoch(counts, seed: int, epoch: int, world_size: int = 1, num_workers: int = 1, batch_size: int = 1,
               drop_last: bool = False) -> EpochPlan:
    if world_size < 1 or num_workers < 1 or batch_size < 1:
        raise ValueError("world_size, num_workers and batch_size must be >= 1")
    return EpochPlan(tuple(counts), seed, epoch, world_size, max(1, num_workers), batch_size, drop_last)


@dataclass(frozen=True)
class ResampledPlan:
    """Step-based training: each (rank, worker) reads whole shards drawn with replacement by
    (seed, rank, worker, draw), endlessly, each rank from its own part of the shards (see
    ``_cumulative``). Batch j of a rank is still made by worker
    ``j % num_workers`` (its ``j // num_workers``-th batch), so a restored loader resumes exactly
    as in the epoch plan; there are no epochs (``epoch`` stays 0) and no end."""
    counts: tuple[int, ...]
    seed: int
    world_size: int
    num_workers: int
    batch_size: int
    weights: tuple[float, ...] | None = None  # per shard; None: every non-empty shard alike
    epoch: int = 0
    batches = None  # endless

    @cached_property
    def _cumulative(self) -> np.ndarray:
        """Per rank, the cumulative draw probabilities of the shards: each rank draws only from its
        own part of every group of like-weighted shards (a dataset of a mix; the whole dataset
        otherwise) that has a shard for every rank, so ranks read different shards; a group with
        fewer shards than ranks is shared by all of them."""
        counts = np.asarray(self.counts, float)
        weights = np.array(self.weights if self.weights is not None else [1.0] * len(counts), float)
        weights[counts == 0] = 0.0
        per_rank = np.tile(weights, (self.world_size, 1))
        for value in np.unique(weights[weights > 0]):
            group = np.flatnonzero(weights == value)
            if len(group) < self.world_size:
                continue
            owner = np.arange(len(group)) % self.world_size
            for rank in range(self.world_size):
                mine = group[owner == rank]
                # the group's share of samples kept on this rank: weight x (its samples / the rank's part of them)
                per_rank[rank, group] = 0.0
                per_rank[rank, mine] = value * counts[group].sum() / counts[mine].sum()
        return np.cumsum(per_rank, axis=1) / per_rank.sum(axis=1, keepdims=True)

    def draw(self, rank: int, worker: int, index: int) -> int:
        rng = np.random.default_rng([self.seed, rank, worker, index, 0x5E5A])
        return int(np.searchsorted(self._cumulative[rank], rng.random(), side="right"))

    def stream_items(self, rank: int, worker: int, start: int = 0):
        """Worker ``worker``'s endless samples from position ``start``."""
        draw = 0
        while start >= self.counts[self.draw(rank, worker, draw)]:
            start -= self.counts[self.draw(rank, worker, draw)]
            draw += 1
        while True:
            shard = self.draw(rank, worker, draw)
            yield from ((shard, i) for i in range(start, self.counts[shard]))
            start, draw = 0, draw + 1

    def worker_items(self, rank: int, worker: int, start_batch: int = 0):
        first = start_batch + worker  # this worker's first batch; all its batches are the same worker's
        return self.stream_items(rank, first % self.num_workers, (first // self.num_workers) * self.batch_size)

    def consumed(self, batches_done: int) -> dict[str, int]:
        k = self.num_workers
        return {f"{r}/{w}": len(range(w, batches_done, k)) * self.batch_size
                for r in range(self.world_size) for w in range(k)}


def plan_resampled(counts, seed: int, world_size: int = 1, num_workers: int = 1, batch_size: int = 1,
                   weights=None) -> ResampledPlan:
    if not any(counts):
        raise ValueError("no samples to draw from")
    if weights is not None and len(weights) != len(counts):
        raise ValueError(f"{len(weights)} weights for {len(counts)} shards")
    return ResampledPlan(tuple(counts), seed, world_size, max(1, num_workers), batch_size,
                         tuple(weights) if weights is not None else None)
