"""The in-process runner (``--runner local``): for tests, QA and debugging; the same shards,
bytes and manifests as the Ray runner."""
from __future__ import annotations

import time

from ray_jobs.shardwork import InputShards, RunSummary, ShardJob, produce_shard, shards_left
from shards import storage
from shards.stage import Stage


def run_local(stage: Stage, shards: list[list[dict]], job: ShardJob, progress: bool = True) -> RunSummary:
    from tqdm import tqdm

    out_dir = job.out_dir  # absolute: a path or a URL
    storage.makedirs(out_dir)
    summary = RunSummary(out_dir, runner="local")
    todo = shards_left(out_dir, shards, job.config_hash, summary)
    bar = tqdm(total=sum(len(shards[i]) for i in todo), unit="sample", disable=not progress, desc=stage.name)
    started = time.perf_counter()
    stage.setup()
    summary.setup_seconds = time.perf_counter() - started
    inputs = InputShards()
    try:
        for n, i in enumerate(todo, start=1):
            summary.add(produce_shard(stage, job, i, shards[i], inputs, on_batch=bar.update))
            bar.set_postfix(shards=f"{summary.shards_skipped + n}/{len(shards)}", rejected=summary.rejected)
    finally:
        stage.teardown()
        bar.close()
    summary.seconds = time.perf_counter() - started
    summary.storage_retries = storage.retry_counts()
    return summary
