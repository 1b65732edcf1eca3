"""The Ray runner (``--runner ray``, the default). Only a shard's work list moves between the
driver and its workers (the records go from input shards to output shards on storage), so the
runner uses Ray's own actors, not Ray Data: Ray Data's executor and actor-pool start cost ~3 s
per stage here and its streaming earns nothing when no records flow between operators. Stages
that hold nothing (``Stage.stateless``) run as plain Ray tasks.

Each worker asks Ray for the stage's declared resources, so the pool is sized by CPUs and GPUs
and a GPU worker sees only its own device (Ray sets ``CUDA_VISIBLE_DEVICES``). The actors are
kept for the driver's life: the next stage of the same job that asks for the same resources
is set up on them instead of starting a new pool. A worker that dies mid-shard is replaced and
the shard redone from scratch; its partial file is never renamed into place, so no partial
shard is ever visible."""
from __future__ import annotations

import os
import time
from collections import deque

import ray

from ray_jobs.config import ConfigError
from ray_jobs.shardwork import InputShards, RunSummary, ShardJob, Watchdog, produce_shard, shards_left
from shards import storage
from shards.keys import shard_name
from shards.stage import Stage, StageUnavailable
from shards.writer import read_manifest


def connect(address: str | None) -> dict:
    """Join the cluster at ``address`` ("auto", "ray://host:port", "host:port"), or start an
    embedded local Ray with this machine's CPUs. Inside ``ray job submit`` (RAY_ADDRESS is set)
    the job's cluster is joined. Returns the cluster's resources."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        started = time.perf_counter()
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # A new cluster of our own, even when another (a `ray start`, another job's embedded
            # Ray) runs on this machine, which ray.init() with no address would join; loopback
            # only: an embedded cluster needs no network. Ray counts the CPUs this process may use
            # (container limits included), which os.cpu_count() would not.
            ray.init(address="local", include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        _startup["seconds"] += time.perf_counter() - started
    return ray.cluster_resources()


_startup = {"seconds": 0.0}  # time spent starting Ray that no job summary has reported yet


def take_startup_seconds() -> float:
    seconds, _startup["seconds"] = _startup["seconds"], 0.0
    return seconds


class ShardHost:
    """A worker (a Ray actor, or the body of a task) that hosts one stage at a time and writes
    the shards it is handed. A stage that cannot start is reported back, not raised: Ray would
    hand the driver only the text of its traceback."""

    def __init__(self):
        self.stage: Stage | None = None
        self.problem = ""

    def start(self, stage: Stage, job: ShardJob) -> None:
        self.stop()
        self.stage, self.job, self.inputs, self.problem = stage, job, InputShards(), ""
        self.watchdog = Watchdog.of_process(job.out_dir, stage.sample_timeout) if stage.sample_timeout else None
        try:
            stage.setup()
        except StageUnavailable as error:
            self.problem = str(error)
        except Exception as error:  # a stage that cannot set up on this worker stops the job, named
            self.problem = f"{stage.name} cannot start: {type(error).__name__}: {error}"

    def produce(self, index: int, items: list[dict]) -> dict:
        began = time.time()  # wall clock: the driver compares it with its own
        if self.problem:
            return {"shard": shard_name(index), "began": began, "unavailable": self.problem}
        try:
            manifest = produce_shard(self.stage, self.job, index, items, self.inputs, watchdog=self.watchdog)
        except StageUnavailable as error:  # the machine, not the data
            return {"shard": shard_name(index), "began": began, "unavailable": str(error)}
        return {"shard": manifest["shard"], "began": began, "unavailable": ""}

    def stop(self) -> None:
        """Release the stage (a renderer, a Blender worker and its scratch folder)."""
        if self.stage is not None:
            self.stage.teardown()
            self.stage = None


def _produce_as_task(stage: Stage, job: ShardJob, index: int, items: list[dict]) -> dict:
    host = ShardHost()
    host.start(stage, job)
    return host.produce(index, items)


class _Pool:
    """The driver's actors, kept across the stages of a job while the resource ask stays the same."""
    cluster: str | None = None
    ask: tuple | None = None
    actors: list = []

    @classmethod
    def take(cls, ask: dict, size: int) -> list:
        cluster, key = ray.get_runtime_context().get_node_id(), tuple(sorted(ask.items()))
        if (cls.cluster, cls.ask) != (cluster, key):
            cls.release()
            cls.cluster, cls.ask = cluster, key
        while len(cls.actors) < size:
            cls.actors.append(cls.new_actor())
        return cls.actors[:size]

    @classmethod
    def new_actor(cls):
        return ray.remote(ShardHost).options(max_restarts=0, **dict(cls.ask)).remote()

    @classmethod
    def replace(cls, actor):
        fresh = cls.new_actor()
        cls.actors[cls.actors.index(actor)] = fresh
        return fresh

    @classmethod
    def release(cls) -> None:
        if ray.is_initialized() and cls.cluster == ray.get_runtime_context().get_node_id():
            for actor in cls.actors:
                ray.kill(actor)
        cls.cluster, cls.ask, cls.actors = None, None, []


def shutdown_in_background():
    """Stop this process's Ray on a thread (1-2 s for an embedded cluster here) while the driver
    goes on with work that needs no Ray (the demo's contact sheets and inspection); returns the
    thread to join, or None when Ray is not running."""
    if not ray.is_initialized():
        return None
    import threading
    _Pool.release()
    thread = threading.Thread(target=ray.shutdown, name="ray-shutdown")
    thread.start()
    return thread


def worker_plan(stage: Stage, resources: dict, workers: int | None, shards: int) -> tuple[int, dict]:
    """(pool size, what each worker asks Ray for): as many workers as the cluster's CPUs and
    GPUs allow for the stage's declared needs, at most ``workers`` and one per shard."""
    need = stage.resources
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    ask_cpus = min(need.cpus, cpus)
    size = int(cpus // ask_cpus)
    if need.gpus:
        if gpus < need.gpus:
            raise ConfigError(f"{stage.name} asks for {need.gpus:g} GPU per worker and the cluster has {gpus:g}; "
                              "run it on a cluster with GPUs or change the stage's resources")
        size = min(size, int(gpus // need.gpus))
    ask = {"num_cpus": ask_cpus, "num_gpus": need.gpus, "memory": need.memory_mb * 2**20}
    return max(1, min(workers or size, size, shards)), ask


def _deaths_allowed(items: list[dict]) -> int:
    """How often a shard's worker may die before the shard is given up: a watchdog kill per
    hanging sample (and one for the batch it hung in), plus a few crashes."""
    return len(items) + 3


def _stop(actors: list) -> None:
    """Every actor releases its stage before the next stage (or the driver's exit) comes."""
    for done in [actor.stop.remote() for actor in actors]:
        try:
            ray.get(done)
        except ray.exceptions.RayActorError:
            pass  # replaced after it died; a dead worker holds nothing


def run_ray(stage: Stage, shards: list[list[dict]], job: ShardJob, progress: bool = True,
            address: str | None = None, workers: int | None = None) -> RunSummary:
    from tqdm import tqdm

    out_dir = job.out_dir  # absolute: a path or a URL
    storage.makedirs(out_dir)
    summary = RunSummary(out_dir, runner="ray")
    todo = shards_left(out_dir, shards, job.config_hash, summary)
    if not todo:
        return summary
    resources = connect(address)
    summary.startup_seconds = take_startup_seconds()
    started, started_wall = time.perf_counter(), time.time()
    size, ask = worker_plan(stage, resources, workers, len(todo))
    summary.workers = size
    stage_ref = ray.put(stage)
    if stage.stateless:
        task = ray.remote(_produce_as_task).options(max_retries=0, **ask)

        def submit(slot, index):
            return task.remote(stage_ref, job, index, shards[index])
        slots: list = list(range(size))
    else:
        slots = _Pool.take(ask, size)
        for actor in slots:
            actor.start.remote(stage_ref, job)

        def submit(actor, index):
            return actor.produce.remote(index, shards[index])
    used = list(slots)
    bar = tqdm(total=sum(len(shards[i]) for i in todo), unit="sample", disable=not progress,
               desc=f"{stage.name} on ray ({size} workers)")
    queue, running, deaths = deque(todo), {}, {}
    first_began = float("inf")
    try:
        while queue or running:
            while queue and slots:
                slot, index = slots.pop(), queue.popleft()
                running[submit(slot, index)] = (slot, index)
            (future,), _ = ray.wait(list(running), num_returns=1)
            slot, index = running.pop(future)
            try:
                result = ray.get(future)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                deaths[index] = deaths.get(index, 0) + 1  # the worker died: a new one redoes the shard
                if deaths[index] <= _deaths_allowed(shards[index]):
                    queue.appendleft(index)
                else:
                    summary.failed.append(shard_name(index))
                    for stale in storage.glob(out_dir, f"{shard_name(index)}.*.tmp"):  # what its dead writers left
                        storage.remove(stale)
                if not stage.stateless:
                    slot = _Pool.replace(slot)
                    slot.start.remote(stage_ref, job)
                    used.append(slot)
                slots.append(slot)
                continue
            if result["unavailable"]:
                raise StageUnavailable(result["unavailable"])
            slots.append(slot)
            first_began = min(first_began, result["began"])
            manifest = read_manifest(out_dir, result["shard"].removesuffix(".tar"))
            summary.add(manifest)
            bar.update(manifest["count"] + len(manifest["rejects"]))
            bar.set_postfix(shards=f"{summary.shards_total - len(queue) - len(running) - len(summary.failed)}"
                                   f"/{summary.shards_total}", rejected=summary.rejected)
        if not stage.stateless:
            _stop(used)
    except BaseException:
        _Pool.release()  # a stage half set up, or shards still running: no later stage reuses them
        raise
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - started
    summary.setup_seconds = min(summary.seconds, max(0.0, first_began - started_wall))  # clocks of other nodes drift
    return summary

