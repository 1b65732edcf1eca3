"""Streaming datasets over shards, on-the-fly compositing and paired augmentation, the three
models (standardizer, IP-Adapter personalizer, router), their trainers and checkpoints."""
