"""Streaming shards into training: one loader for every record kind, split by rank and worker,
with exact mid-epoch resume (issue 16, part 1).

    from train.data import ShardSet, ShardStream, ShardLoader, decoder_for
    shards = ShardSet.load("out/pairs", kind="synthetic_pair")        # folder, glob or brace pattern
    stream = ShardStream(shards, decoder_for("synthetic_pair", (256, 384), backgrounds=bgs),
                         batch_size=8, rank=rank, world_size=world, seed=0)
    loader = ShardLoader(stream, num_workers=4)                       # a torch DataLoader inside
    for batch in loader: ...;  ckpt["loader"] = loader.state_dict()  # later: loader.load_state_dict(...)

Modules: ``sources`` (shard lists and manifests, the kind check), ``split`` (the per-epoch plan:
which (rank, worker) reads which samples), ``kinds`` (record -> model-ready arrays per kind),
``loader`` (the stream, the torch IterableDataset and the resumable loader). torch is imported
only inside ``loader``'s functions, so the rest works without it."""
from train.data.kinds import decoder_for
from train.data.loader import ShardLoader, ShardStream, torch_dataset
from train.data.sources import DatasetKindError, ShardSet, ShardSource, expand_pattern, read_shard
from train.data.split import EpochPlan, ResampledPlan, plan_epoch, plan_resampled

__all__ = ["DatasetKindError", "EpochPlan", "ResampledPlan", "ShardLoader", "ShardSet", "ShardSource", "ShardStream",
           "decoder_for", "expand_pattern", "plan_epoch", "plan_resampled", "read_shard", "torch_dataset"]
