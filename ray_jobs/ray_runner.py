"""The Ray runner (``--runner ray``, the default): each shard is one Ray Data row carrying its
work items as JSON text; an actor pool (or plain tasks for stages without state) builds the stage
once per worker and writes whole shards atomically, returning one summary row per shard. A worker
that dies mid-shard is replaced and the shard redone from scratch; its partial file is never
renamed into place, so no partial shard is ever visible."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import ray
import ray.data

from ray_jobs.shardwork import RunSummary, Watchdog, produce_shard, shards_left
from shards.keys import shard_name
from shards.schema import Schema, schema_named
from shards.stage import Stage, StageUnavailable
from shards.writer import read_manifest


def connect(address: str | None) -> dict:
    """Join the cluster at ``address`` ("auto", "ray://host:port", "host:port"), or start an
    embedded local Ray with this machine's CPUs. Inside ``ray job submit`` (RAY_ADDRESS is set)
    the job's cluster is joined. Returns the cluster's resources."""
    address = address or os.environ.get("RAY_ADDRESS")
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our progress bar and summary say it
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # A new cluster of our own, even when another (a `ray start`, another job's embedded
            # Ray) runs on this machine, which ray.init() with no address would join; loopback
            # only: an embedded cluster needs no network. Ray counts the CPUs this process may use
            # (container limits included), which os.cpu_count() would not.
            ray.init(address="local", include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    return ray.cluster_resources()


class ShardWorker:
    """A Ray Data actor: builds the stage once, then produces the shards it is handed."""

    def __init__(self, stage: Stage, out_dir: str, schema: str, config_hash: str, versions: dict,
                 batch_size: int, sample_timeout: float | None):
        self.stage, self.out_dir = stage, Path(out_dir)
        self.schema, self.config_hash, self.versions = schema_named(schema), config_hash, versions
        self.batch_size, self.sample_timeout = batch_size, sample_timeout
        self.watchdog = Watchdog(self.out_dir, sample_timeout) if sample_timeout else None
        self.stage.setup()

    def __del__(self):
        """Ray Data drops the worker when the job's pool shuts down gracefully (not when a worker
        is killed): the stage releases what it holds, e.g. a Blender worker and its scratch folder."""
        stage = getattr(self, "stage", None)  # absent when __init__ failed
        if stage is not None:
            stage.teardown()

    def __call__(self, batch: dict) -> dict:
        names, seconds, began = [], [], []
        for index, items in zip(batch["shard"], batch["items"]):
            began.append(time.time())  # wall clock: the driver compares it with its own
            started = time.perf_counter()
            try:
                manifest = produce_shard(self.stage, int(index), json.loads(items), self.out_dir, self.schema,
                                         self.config_hash, self.versions, self.batch_size, self.sample_timeout,
                                         watchdog=self.watchdog)
            except StageUnavailable as error:
                # The machine, not the data: the driver stops the job with this message (Ray would
                # hand it over only as the text of a traceback).
                return {"shard": [shard_name(int(index))], "seconds": [0.0], "began": began[-1:],
                        "unavailable": [str(error)]}
            names.append(manifest["shard"])
            seconds.append(time.perf_counter() - started)
        return {"shard": names, "seconds": seconds, "began": began, "unavailable": [""] * len(names)}


def _run_as_task(batch: dict, **worker_args) -> dict:
    return ShardWorker(**worker_args)(batch)


def default_workers(stage: Stage, resources: dict) -> tuple[int, float]:
    """(pool size, CPUs per worker): as many workers as the cluster's CPUs allow, each asking for
    a little less than the stage declares, so Ray Data's own tasks always find a CPU (a 2-CPU
    cluster whose actors ask a whole CPU each deadlocks)."""
    cpus = float(resources.get("CPU", 1))
    per_worker = max(0.25, min(stage.resources.cpus, cpus) * 0.75)
    return max(1, int(cpus // max(stage.resources.cpus, 1e-6))), per_worker


def run_ray(stage: Stage, shards: list[list[dict]], out_dir: str | Path, schema: Schema, config_hash: str,
            versions: dict[str, str], batch_size: int = 16, progress: bool = True,
            sample_timeout: float | None = None, address: str | None = None,
            workers: int | None = None) -> RunSummary:
    from tqdm import tqdm

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(str(out_dir), runner="ray")
    todo = shards_left(out_dir, shards, config_hash, summary)
    started = time.perf_counter()
    if not todo:
        return summary
    resources = connect(address)
    summary.startup_seconds = time.perf_counter() - started
    started, started_wall = time.perf_counter(), time.time()
    size, cpus = default_workers(stage, resources)
    size = min(workers or size, len(todo))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    rows = [{"shard": i, "items": json.dumps(shards[i])} for i in todo]
    worker_args = {"stage": stage, "out_dir": str(out_dir), "schema": schema.name, "config_hash": config_hash,
                   "versions": versions, "batch_size": batch_size, "sample_timeout": sample_timeout}
    resources = {"num_cpus": cpus, "num_gpus": stage.resources.gpus or None,
                 "memory": stage.resources.memory_mb * 2**20}
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    if type(stage).setup is Stage.setup and not stage.resources.gpus:  # stateless: plain tasks
        dataset = dataset.map_batches(_run_as_task, batch_size=1, fn_kwargs=worker_args, **resources)
    else:
        dataset = dataset.map_batches(ShardWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=size),
                                      fn_constructor_kwargs=worker_args, **resources)
    samples = {shard_name(i): len(shards[i]) for i in todo}
    bar = tqdm(total=sum(samples.values()), unit="sample", disable=not progress,
               desc=f"{stage.name} on ray ({size} workers)")
    finished, first_began = summary.shards_skipped, float("inf")
    for batch in dataset.iter_batches(batch_size=1, batch_format="numpy"):
        first_began = min(first_began, *batch["began"])
        for problem in batch["unavailable"]:
            if problem:
                raise StageUnavailable(str(problem))
        for name in batch["shard"]:
            stem = str(name).removesuffix(".tar")
            summary.add(read_manifest(out_dir, stem))
            finished += 1
            bar.update(samples[stem])
            bar.set_postfix(shards=f"{finished}/{len(shards)}", rejected=summary.rejected)
    bar.close()
    summary.seconds = time.perf_counter() - started
    summary.setup_seconds = min(summary.seconds, max(0.0, first_began - started_wall))  # clocks of other nodes drift
    return summary
