"""The stage contract on both runners: what a stage declares (GPUs, statelessness, decoded
members) decides how it runs; input records reach it decoded where it asks and byte for byte
where it does not; a reject keeps its verdict fields. The Ray tests run on a cluster of this
process started with a fake GPU."""
import json
import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from ray_jobs.config import ConfigError
from ray_jobs.jobs import RunOptions, run_job
from ray_jobs.shardwork import plan_shards
from shards.encoding import encode_png
from shards.reader import iter_dataset, iter_shard
from shards.schema import Schema
from shards.stage import Resources, Stage, rejected
from shards.writer import ShardWriter, read_manifest

@dataclass(frozen=True)
class Job:
    """A job's config: its hash goes into the manifests."""
    n: int


PROBE = Schema("probe", 1, {"json": "json"})
PASSED = Schema("passed", 1, {"img.png": "RGB", "json": "json"})


def _where() -> dict:
    """Where a sample ran: process, Ray actor (None in a task) and the devices it may see."""
    import ray
    context = ray.get_runtime_context() if ray.is_initialized() else None
    return {"pid": os.getpid(), "actor": context.get_actor_id() if context else None,
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpus": [str(g) for g in ray.get_gpu_ids()]
            if context else []}


class ProbeStage(Stage):
    """Holds state (so it runs on actors) and records where each sample ran."""
    name = "probe"
    schema = PROBE

    def __init__(self, gpus: float = 0.0):
        self.resources = Resources(cpus=0.5, gpus=gpus, memory_mb=100)
        self.batch_size = 2
        self.ready = False

    def setup(self):
        self.ready = True

    def process_batch(self, records):
        assert self.ready, "process_batch before setup"
        return [{"__key__": r["__key__"], "json": json.dumps(_where()).encode()} for r in records]


class StatelessProbe(Stage):
    name = "stateless-probe"
    schema = PROBE
    resources = Resources(cpus=0.5, memory_mb=100)

    def process_batch(self, records):
        return [{"__key__": r["__key__"], "json": json.dumps(_where()).encode()} for r in records]


class VerdictStage(Stage):
    """Rejects odd samples with a reason and scores, as a curation check would."""
    name = "verdict"
    schema = PROBE
    resources = Resources(cpus=0.5, memory_mb=100)
    batch_size = 3

    def process_batch(self, records):
        out = []
        for r in records:
            n = int(r["__key__"][1:])
            if n % 2:
                out.append(rejected(r["__key__"], f"dark: mean brightness {n / 100:.2f} < 0.5",
                                    scores={"brightness": n / 100, "contrast": 0.3}))
            else:
                out.append({"__key__": r["__key__"], "json": b"{}"})
        return out


class PassThroughStage(Stage):
    """Decodes only the json of its input and passes the image on as it came."""
    name = "pass-through"
    schema = PASSED
    resources = Resources(cpus=0.5, memory_mb=100)
    decodes = frozenset({"json"})

    def process_batch(self, records):
        out = []
        for r in records:
            source = r["inputs"][0]
            assert isinstance(source["img.png"], bytes) and isinstance(source["json"], dict)
            out.append({"__key__": r["__key__"], "img.png": source["img.png"],
                        "json": json.dumps({"seen": source["json"]["n"]}).encode()})
        return out


class CrashingStage(ProbeStage):
    """Its worker process dies whenever it meets key k003."""
    name = "crashing"

    def process_batch(self, records):
        if any(r["__key__"] == "k003" for r in records):
            os._exit(1)
        return super().process_batch(records)


def _items(n: int) -> list[dict]:
    return [{"__key__": f"k{i:03d}"} for i in range(n)]


def _records(out) -> list[dict]:
    return list(iter_dataset(out))


@pytest.fixture(scope="module")
def gpu_cluster():
    """A Ray cluster of this process with 2 CPUs and one fake GPU."""
    import ray
    from ray import cloudpickle

    from ray_jobs.ray_runner import _Pool
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's stages travel by value
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    yield ray
    _Pool.release()
    ray.shutdown()


RAY = RunOptions(runner="ray", progress=False)


@pytest.mark.ray
@pytest.mark.slow
def test_a_gpu_stage_gets_a_pool_sized_by_gpus_and_its_own_device(gpu_cluster, tmp_path):
    # 2 CPUs would allow 4 workers of 0.5 CPU; the one GPU allows one worker of 1 GPU.
    summary = run_job(ProbeStage(gpus=1.0), plan_shards(_items(8), 2), tmp_path / "one", Job(1), RAY)
    assert summary.workers == 1 and summary.done == 8
    seen = [r["json"] for r in _records(tmp_path / "one")]
    assert {s["pid"] for s in seen} == {seen[0]["pid"]} and all(s["actor"] for s in seen)
    assert {s["cuda"] for s in seen} == {"0"} and {tuple(s["gpus"]) for s in seen} == {("0",)}
    # Half a GPU each: two workers share the one device.
    summary = run_job(ProbeStage(gpus=0.5), plan_shards(_items(8), 1), tmp_path / "half", Job(2), RAY)
    assert summary.workers == 2
    assert {r["json"]["cuda"] for r in _records(tmp_path / "half")} == {"0"}
    # A stage without GPUs sees none.
    run_job(ProbeStage(), plan_shards(_items(4), 2), tmp_path / "cpu", Job(3), RAY)
    assert {r["json"]["cuda"] or "" for r in _records(tmp_path / "cpu")} == {""}


@pytest.mark.ray
@pytest.mark.slow
def test_a_stage_asking_more_gpus_than_the_cluster_has_stops_before_any_work(gpu_cluster, tmp_path):
    with pytest.raises(ConfigError, match="asks for 2 GPU per worker and the cluster has 1"):
        run_job(ProbeStage(gpus=2.0), plan_shards(_items(2), 2), tmp_path, Job(4), RAY)
    assert not list(tmp_path.glob("*.tar"))


@pytest.mark.ray
@pytest.mark.slow
def test_a_stateless_stage_runs_as_ray_tasks(gpu_cluster, tmp_path):
    assert StatelessProbe().stateless and not ProbeStage().stateless
    summary = run_job(StatelessProbe(), plan_shards(_items(6), 2), tmp_path, Job(5), RAY)
    assert summary.done == 6 and summary.runner == "ray"
    seen = [r["json"] for r in _records(tmp_path)]
    assert all(s["actor"] is None for s in seen) and all(s["pid"] != os.getpid() for s in seen)


@pytest.mark.ray
@pytest.mark.slow
def test_the_actors_of_one_stage_are_reused_by_the_next_with_the_same_ask(gpu_cluster, tmp_path):
    run_job(ProbeStage(), plan_shards(_items(2), 2), tmp_path / "a", Job(6), RAY)
    run_job(ProbeStage(), plan_shards(_items(2), 2), tmp_path / "b", Job(7), RAY)
    actor = {r["json"]["actor"] for r in _records(tmp_path / "a")}
    assert actor == {r["json"]["actor"] for r in _records(tmp_path / "b")} and len(actor) == 1


@pytest.mark.parametrize("runner", ["local", pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_a_reject_keeps_its_verdict_fields_and_summaries_count_reasons(runner, request, tmp_path):
    if runner == "ray":
        request.getfixturevalue("gpu_cluster")
    summary = run_job(VerdictStage(), plan_shards(_items(7), 4), tmp_path, Job(8),
                      RunOptions(runner=runner, progress=False))
    assert summary.done == 4 and summary.rejected == 3 and summary.reasons == {"dark": 3}
    assert any("3 x dark (e.g. dark: mean brightness 0.01 < 0.5)" in line for line in summary.lines())
    manifest = read_manifest(tmp_path, "shard-000000")
    assert manifest["reject_reasons"] == {"dark": 2}
    assert manifest["rejects"][0] == {"key": "k001", "status": "rejected", "error": "dark: mean brightness 0.01 < 0.5",
                                      "scores": {"brightness": 0.01, "contrast": 0.3}}


def test_a_reject_whose_fields_are_not_json_is_refused_naming_them(tmp_path):
    with ShardWriter(tmp_path, "shard-000000", PROBE, "h") as writer:
        with pytest.raises(ValueError, match=r"reject k1: its fields \['scores'\] must be JSON values"):
            writer.write(rejected("k1", "dark: x", scores=np.zeros(2)))


@pytest.mark.parametrize("runner", ["local", pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_input_records_arrive_decoded_where_asked_and_pass_through_byte_for_byte(runner, request, tmp_path):
    if runner == "ray":
        request.getfixturevalue("gpu_cluster")
    source = tmp_path / "in"
    rng = np.random.default_rng(0)
    with ShardWriter(source, "shard-000000", PASSED, "h") as writer:
        for i in range(5):
            image = rng.integers(0, 255, (8, 6, 3), dtype=np.uint8)
            writer.write({"__key__": f"k{i:03d}", "img.png": encode_png(image), "json": json.dumps({"n": i})})
        writer.write({"__key__": "k005", "img.png": encode_png(image), "json": b"{broken"})  # does not decode
    path = str(source / "shard-000000.tar")
    items = [{"__key__": f"k{i:03d}", "inputs": [[path, f"k{i:03d}"]]} for i in range(5)]
    items.append({"__key__": "k005", "inputs": [[path, "k005"]]})
    items.append({"__key__": "k099", "inputs": [[path, "k099"]]})  # names a record the shard lacks
    out = tmp_path / "out"
    summary = run_job(PassThroughStage(), [items], out, Job(9), RunOptions(runner=runner, progress=False))
    assert summary.done == 5 and summary.reasons == {"input": 2}
    errors = sorted(r["error"] for r in read_manifest(out, "shard-000000")["rejects"])
    assert "k005.json does not decode" in errors[0] and "no record 'k099'" in errors[1]
    before = {r["__key__"]: r["img.png"] for r in iter_shard(path, decode=False) if r["__key__"] != "k005"}
    after = {r["__key__"]: r for r in iter_shard(out / "shard-000000.tar", decode=False)}
    assert {k: r["img.png"] for k, r in after.items()} == before
    assert [json.loads(r["json"])["seen"] for r in after.values()] == [0, 1, 2, 3, 4]


def test_with_changes_what_a_stage_declares_and_nothing_else():
    stage = ProbeStage()
    changed = stage.with_(batch_size=7, resources=Resources(gpus=1.0))
    assert (changed.batch_size, changed.resources.gpus, stage.batch_size, stage.resources.gpus) == (7, 1.0, 2, 0.0)
    with pytest.raises(TypeError, match="cannot change \\['ready'\\]"):
        stage.with_(ready=False)


def test_the_ray_runner_without_ray_installed_names_the_extra(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'pairforge\[ray\]'.*--runner local"):
        RunOptions(runner="ray")
    assert RunOptions(runner="local").runner == "local"


def test_render_stages_declare_a_gpu_only_when_their_config_asks_for_one():
    from ray_jobs.config import load_config
    from render.config import RenderConfig
    from render.multiview import MultiviewConfig, MultiviewStage
    from render.stage import RenderStage

    def render_stage(*overrides):
        return RenderStage(load_config(RenderConfig, "demo", list(overrides)))
    assert render_stage().resources.gpus == 0 and render_stage().sample_timeout == 120.0
    assert render_stage("backend=blender").resources.gpus == 0  # auto: whatever GPU Cycles finds, none asked
    gpu = render_stage("backend=blender", "blender.device=gpu", "blender.timeout_s=10", "blender.tries=3")
    assert gpu.resources.gpus == 1.0 and gpu.sample_timeout == 3 * 10 * 3 + 60 and gpu.packages == ("bpy",)
    multiview = MultiviewStage(load_config(MultiviewConfig, None, ["objects=/x", "blender.device=gpu"]))
    assert multiview.resources.gpus == 1.0


@pytest.mark.ray
@pytest.mark.slow
def test_a_shard_whose_workers_keep_dying_is_given_up_and_the_others_finish(gpu_cluster, tmp_path):
    summary = run_job(CrashingStage(), plan_shards(_items(6), 2), tmp_path, Job(10), RAY)
    assert summary.failed == ["shard-000001"] and summary.done == 4
    assert any(line.startswith("FAILED: 1 shards") for line in summary.lines())
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-000000.tar", "shard-000002.tar"]
    assert not list(tmp_path.glob("*.tmp"))  # no partial shard left behind
