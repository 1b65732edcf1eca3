"""The Ray Data way in, for Ray Train jobs that take a ``ray.data.Dataset``: Ray's
``read_webdataset`` reads the tars and hands over each member's bytes untouched (``decoder=None``:
Ray's own decoder would unpickle ``.pyd`` members), then the same safe decode, schema check and
per-kind decoder as the DataLoader path, so a key gives the same arrays on both ways for the same
(decoder, epoch):

    ds = ray_dataset(ShardSet.load("s3://bucket/pairs", kind="synthetic_pair"),
                     decoder_for("synthetic_pair", (512, 768), backgrounds=bgs), epoch=0)
    trainer = TorchTrainer(..., datasets={"train": ds})
    # in the worker: ray.train.get_dataset_shard("train").iter_torch_batches(batch_size=8, collate_fn=collate_fn())

A record that does not decode or does not match its schema is dropped with a logged reason (Ray
Train's ``get_dataset_shard`` splits what remains into equal parts). The epoch is fixed per
Dataset: on-the-fly composites draw anew when a new Dataset is made with the next epoch. ray and
torch are imported inside the functions (the layering rule)."""
from __future__ import annotations

import functools
import logging

import numpy as np

from shards.reader import ShardError, decode_member
from shards.schema import schema_named
from train.data.sources import ShardSet

log = logging.getLogger(__name__)


class DecodeRecord:
    """Ray Data row (member -> bytes, plus ``__key__`` and ``__url__``) -> [decoded sample] or []."""

    def __init__(self, kind: str, decoder, epoch: int, keys: frozenset | None = None):
        self.schema, self.decoder, self.epoch, self.keys = schema_named(kind), decoder, epoch, keys

    def __call__(self, row: dict) -> list[dict]:
        key, url = row["__key__"], row.get("__url__", "?")
        if self.keys is not None and key not in self.keys:  # another split's record
            return []
        try:
            if "/" in key:
                raise ShardError(f"member names with folders ({key!r}) are refused")
            record = {"__key__": key}
            for member, data in row.items():
                if not member.startswith("__"):
                    record[member] = decode_member(member, data)
            problems = self.schema.validate(record)
            if problems:
                raise ShardError(f"not a valid {self.schema.tag} record: {'; '.join(problems)}")
            return [{**self.decoder(record, self.epoch), "__shard__": url}]
        except Exception as error:  # one bad record is dropped, never the job
            log.warning("%s: sample %s dropped: %s", url, key, error)
            return []


def ray_dataset(source: ShardSet, decoder, epoch: int = 0, **read_options):
    """A ``ray.data.Dataset`` of ``source``'s decoded samples; ``read_options`` go to
    ``ray.data.read_webdataset`` (``filesystem``, ``shuffle="files"``, ``override_num_blocks``...)."""
    import ray.data

    if getattr(decoder, "kind", source.kind) != source.kind:
        raise ValueError(f"a {decoder.kind} decoder for a dataset of {source.kind} records")
    if read_options.get("decoder") is not None:
        raise ValueError("the members are decoded by pairforge's safe reader; leave read_webdataset's decoder=None")
    read_options["decoder"] = None
    dataset = ray.data.read_webdataset([s.path for s in source.shards], **read_options)
    chosen = any(s.positions is not None for s in source.shards)  # a split: some records are left out
    keys = frozenset(k for s in source.shards for k in s.keys) if chosen else None
    return dataset.flat_map(DecodeRecord(source.kind, decoder, epoch, keys))


@functools.cache
def _collate_class():
    """The collate class, made on first use so that importing this module needs no ray or torch."""
    import torch
    from ray.data.collate_fn import NumpyBatchCollateFn

    class Collate(NumpyBatchCollateFn):
        """Numeric columns to tensors (copied: Ray's arrays are read-only views of its object
        store), text columns (keys, captions, shard names) to lists of str, as a torch DataLoader
        collates them."""

        def __call__(self, batch: dict) -> dict:
            return {name: torch.from_numpy(np.array(value)) if value.dtype.kind in "biuf" else
                    [str(v) for v in value] for name, value in batch.items()}

    return Collate


def collate_fn():
    """For ``iter_torch_batches(batch_size=..., collate_fn=collate_fn())``."""
    return _collate_class()()
