"""Streaming shards into training: one loader for every record kind, split by rank and worker,
with exact mid-epoch resume.

    from train.data import ShardSet, ShardStream, ShardLoader, decoder_for, to_model
    shards = ShardSet.load("out/pairs", kind="synthetic_pair")        # folder, glob or brace pattern
    stream = ShardStream(shards, decoder_for("synthetic_pair", (512, 768), backgrounds=bgs),
                         batch_size=8, rank=rank, world_size=world, seed=0)
    loader = ShardLoader(stream, num_workers=4)                       # a torch DataLoader inside
    for batch in loader: batch = to_model(batch, "cuda"); ...;  ckpt["loader"] = loader.state_dict()

Several datasets: ``ShardSet.mix([(a, 0.7), (b, 0.3)])`` with ``resampled=True``. Ray Train jobs
that take a Ray Dataset: ``ray_data.ray_dataset(shards, decoder)`` gives the same samples.

Modules: ``sources`` (shard lists and manifests, the kind check, mixing), ``split`` (the
per-epoch plan: which (rank, worker) reads which samples), ``kinds`` (record -> model-ready arrays
per kind), ``loader`` (the stream, the torch IterableDataset and the resumable loader),
``ray_data`` (the Ray Data way in). torch and ray are imported inside functions only, so the
rest works without them."""
from train.data.kinds import decoder_for, to_model
from train.data.loader import ShardLoader, ShardStream, torch_dataset
from train.data.sources import DatasetKindError, ShardSet, ShardSource, expand_pattern, read_shard
from train.data.split import EpochPlan, ResampledPlan, plan_epoch, plan_resampled

__all__ = ["DatasetKindError", "EpochPlan", "ResampledPlan", "ShardLoader", "ShardSet", "ShardSource", "ShardStream",
           "decoder_for", "expand_pattern", "plan_epoch", "plan_resampled", "read_shard", "to_model",
           "torch_dataset"]
