"""``pairforge caption`` over demo shards: a tiny Qwen2-VL (built from a config, saved, loaded by
path with HF_HUB_OFFLINE=1) captions every record through the real transformers path, the image
members are copied byte for byte, a re-run takes every caption from the cache (no model call),
sidecars are keyed alike, the metadata captioner needs no model, and on Ray the generation runs
in GPU actors sized by the (fake) GPUs."""
import json

import pytest

from curate.caption.config import CaptionConfig
from ray_jobs.captioning import run_caption
from ray_jobs.cli import main
from ray_jobs.config import load_config
from ray_jobs.jobs import RunOptions
from shards.inspect import inspect_dataset
from shards.reader import iter_dataset

LOCAL = RunOptions(runner="local", progress=False)
TINY = ["generation.max_new_tokens=6", "min_pixels=3136", "max_pixels=12544"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--characters", "3", "--poses", "2", "--scenes", "4",
                 "--resolution", "128x192", "--runner", "local", "--quiet"]) == 0
    return out


def _raw(folder) -> dict:
    return {r["__key__"]: r for r in iter_dataset(folder, decode=False)}


@pytest.fixture
def model_calls(monkeypatch):
    """Counts the images that reach the model (the real generate runs)."""
    from curate.caption.models import TransformersCaptioner

    calls = []
    real = TransformersCaptioner.caption

    def counted(self, images, prompts):
        calls.append(len(images))
        return real(self, images, prompts)
    monkeypatch.setattr(TransformersCaptioner, "caption", counted)
    return calls


@pytest.mark.slow
def test_the_model_captions_every_record_and_a_rerun_takes_all_from_the_cache(demo, tiny_qwen2vl, tmp_path,
                                                                             monkeypatch, model_calls):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config(CaptionConfig, None, [f"model={tiny_qwen2vl}", "batch_size=4", *TINY])
    source = _raw(demo / "composited")
    summary = run_caption(config, demo / "composited", tmp_path / "first", LOCAL)
    assert summary.done == len(source) == 6 and summary.rejected == 0 and sum(model_calls) == 6
    captioned = _raw(tmp_path / "first")
    assert captioned.keys() == source.keys()
    for key, record in captioned.items():
        assert record["txt"].decode().strip()
        assert {m: record[m] for m in source[key] if not m.startswith("__")} == \
            {m: v for m, v in source[key].items() if not m.startswith("__")}  # every member byte for byte
        lineage = json.loads(record["caption.json"])["captioner"]
        assert lineage["model"] == str(tiny_qwen2vl) and lineage["model_type"] == "qwen2_vl" and lineage["hash"]
        assert lineage["generation"]["do_sample"] is False and lineage["prompt"] == config.prompts.synthetic_character
    assert inspect_dataset(tmp_path / "first").ok
    # A new job over the same images and settings: every caption comes from the cache.
    model_calls.clear()
    again = load_config(CaptionConfig, None, [f"model={tiny_qwen2vl}", "batch_size=4", *TINY,
                                              f"cache={tmp_path / 'first' / 'caption_cache'}"])
    assert run_caption(again, demo / "composited", tmp_path / "second", LOCAL).done == 6
    assert model_calls == []
    assert {k: r["txt"] for k, r in _raw(tmp_path / "second").items()} == {k: r["txt"] for k, r in captioned.items()}


def test_router_scenes_get_metadata_captions_inline_or_as_sidecars_keyed_alike(demo, tmp_path, capsys):
    scenes = _raw(demo / "router")
    assert {r["txt"] for r in scenes.values()} <= {f"a scene with {n} characters".encode() for n in (2, 3, 4)}
    assert main(["caption", "--in", str(demo / "router"), "--out", str(tmp_path / "inline"), "--runner", "local",
                 "--quiet"]) == 0
    inline = _raw(tmp_path / "inline")
    assert inline.keys() == scenes.keys()
    for key, record in inline.items():
        assert record["txt"].decode().startswith(("two 3D-rendered characters", "three 3D-rendered characters"))
        assert record["image.jpg"] == scenes[key]["image.jpg"] and record["json"] == scenes[key]["json"]
    assert main(["caption", "--in", str(demo / "router"), "--out", str(tmp_path / "sidecar"), "--runner", "local",
                 "--quiet", "--set", "output=sidecar"]) == 0
    sidecars = list(iter_dataset(tmp_path / "sidecar"))
    assert [r["__key__"] for r in sidecars] == list(scenes)
    assert [r["txt"].encode() for r in sidecars] == [r["txt"] for r in inline.values()]
    assert all(r["json"]["kind"] == "router_sample" and r["json"]["captioner"]["backend"] == "metadata"
               for r in sidecars)
    assert inspect_dataset(tmp_path / "sidecar").ok and inspect_dataset(tmp_path / "inline").ok
    # The demo captioned its composites and scenes the same way.
    assert {k: r["txt"] for k, r in _raw(demo / "captions" / "router").items()} == \
        {k: r["txt"] for k, r in inline.items()}
    assert len(_raw(demo / "captions" / "composited")) == 6


@pytest.fixture(scope="module")
def gpu_cluster():
    """A Ray cluster of this process with 2 CPUs and one fake GPU."""
    import ray

    from ray_jobs.ray_runner import _Pool
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    yield ray
    _Pool.release()
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_on_ray_generation_runs_in_a_gpu_actor_per_gpu_and_writes_what_the_local_runner_does(
        demo, tiny_qwen2vl, gpu_cluster, tmp_path):
    settings = [f"model={tiny_qwen2vl}", "gpus=1", "cpus=0.5", "memory_mb=1000", "device=cpu", "cache=none", *TINY]
    config = load_config(CaptionConfig, None, settings)
    on_ray = run_caption(config, demo / "router", tmp_path / "ray", RunOptions(runner="ray", progress=False))
    assert on_ray.workers == 1 and on_ray.done == 4  # one fake GPU: one generation actor
    run_caption(config, demo / "router", tmp_path / "local", LOCAL)
    assert (tmp_path / "ray" / "shard-000000.tar").read_bytes() == (tmp_path / "local" / "shard-000000.tar").read_bytes()


@pytest.mark.slow
def test_bench_caption_measures_batched_against_one_image_per_call(capsys):
    assert main(["bench", "caption", "--images", "4", "--batch-size", "4", "--resolution", "64x96"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["benchmark"] == "caption" and figures["images"] == 4 and figures["device"] == "cpu"
    assert figures["batch4_captions_per_s"] > 0 and figures["batch1_captions_per_s"] > 0
    assert 0 < figures["batch4_preprocess_share"] < 1
    assert figures["ratio"] == pytest.approx(figures["batch4_captions_per_s"] / figures["batch1_captions_per_s"],
                                             rel=0.05)
