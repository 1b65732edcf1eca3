"""The data contract: record schemas, sample keys and seeds, the atomic shard writer, the safe
reader, per-shard manifests and the dataset validator. Depends on numpy, PIL and webdataset only,
so every other package (and every training job) can rely on it."""
