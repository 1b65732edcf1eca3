"""The in-process runner (``--runner local``): for tests, QA and debugging; the same shards,
bytes and manifests as the Ray runner."""
from __future__ import annotations

import time
from pathlib import Path

from ray_jobs.shardwork import RunSummary, produce_shard, shards_left
from shards.schema import Schema
from shards.stage import Stage


def run_local(stage: Stage, shards: list[list[dict]], out_dir: str | Path, schema: Schema, config_hash: str,
              versions: dict[str, str], batch_size: int = 16, progress: bool = True,
              sample_timeout: float | None = None) -> RunSummary:
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(str(out_dir), runner="local")
    todo = shards_left(out_dir, shards, config_hash, summary)
    bar = tqdm(total=sum(len(shards[i]) for i in todo), unit="sample", disable=not progress, desc=stage.name)
    started = time.perf_counter()
    stage.setup()
    summary.setup_seconds = time.perf_counter() - started
    try:
        for i in todo:
            summary.add(produce_shard(stage, i, shards[i], out_dir, schema, config_hash, versions, batch_size,
                                      sample_timeout, on_batch=bar.update))
            bar.set_postfix(shards=f"{summary.shards_skipped + todo.index(i) + 1}/{len(shards)}",
                            rejected=summary.rejected)
    finally:
        stage.teardown()
        bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
