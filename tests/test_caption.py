"""Captioners: metadata captions of renders, the caption cache, the config and model checks that
stop a job before any work, and the Qwen2-VL path on a tiny model built from a config (greedy,
batched with left padding: the same text as one image at a time)."""
import threading

import numpy as np
import pytest

from curate.caption.cache import CaptionCache, caption_key
from curate.caption.config import CaptionConfig
from curate.caption.metadata import CharacterParams, colour_name, metadata_caption, pose_phrase
from ray_jobs.config import ConfigError, load_config
from tests.helpers import make_record, png_bytes, write_shard

def _keypoints(wrist_y: float, ankle_x=(45.0, 55.0)) -> list:
    kp = [[50.0, 50.0, 1.0] for _ in range(18)]
    kp[2], kp[5] = [40.0, 40.0, 1.0], [60.0, 40.0, 1.0]          # shoulders
    kp[4], kp[7] = [38.0, wrist_y, 1.0], [62.0, wrist_y, 1.0]      # wrists
    kp[8], kp[11] = [46.0, 70.0, 1.0], [54.0, 70.0, 1.0]           # hips
    kp[10], kp[13] = [ankle_x[0], 95.0, 1.0], [ankle_x[1], 95.0, 1.0]  # ankles
    return kp


def test_pose_and_colour_phrases_follow_the_keypoints_and_rgb():
    assert pose_phrase(_keypoints(wrist_y=20.0)) == "standing with both arms raised"
    assert pose_phrase(_keypoints(wrist_y=60.0, ankle_x=(20.0, 80.0))) == "standing with legs apart, with arms down"
    assert (colour_name((250, 10, 20)), colour_name((30, 60, 210)), colour_name((5, 5, 5))) == ("red", "blue", "black")


def test_metadata_caption_of_a_composite_names_clothing_pose_expression_view_and_background(character_dir):
    from render.procedural.params import sample_params

    characters = CharacterParams(str(character_dir))
    character = sorted(character_dir.glob("*.glb"))[0].stem
    params = characters.of(character)
    assert params is not None and params["seed"] == sample_params(params["seed"]).seed  # read from the .glb
    meta = {"character_id": character, "src": {"keypoints": _keypoints(wrist_y=20.0),
                                               "pair_spec": {"camera": {"azimuth_deg": 80.0, "elevation_deg": 20.0},
                                                             "expression": {"smile": 0.9, "eyes_closed": 0.1}}},
            "background": {"source": "procedural", "name": "procedural-0-000004-room"}}
    caption = metadata_caption("composited_pair", meta, characters)
    assert caption.startswith("a 3D-rendered character, ") and colour_name(params["shirt_colour"]) in caption
    for phrase in ("both arms raised", "smiling", "seen from the side, from slightly above", "in front of a simple room"):
        assert phrase in caption
    assert "closed eyes" not in caption  # a weight under the threshold is not shown
    # A character the folder does not hold (a bought asset): the caption goes without clothing.
    assert "wearing" not in metadata_caption("composited_pair", {**meta, "character_id": "hero"}, characters)
    with pytest.raises(ValueError, match="no template for 'photo'"):
        metadata_caption("photo", meta, characters)


def test_the_cache_key_covers_image_model_and_prompt_and_entries_survive_concurrent_writers(tmp_path):
    identity = {"model": "m", "hash": "1", "generation": {"max_new_tokens": 8}}
    key = caption_key(b"image", identity, "describe")
    assert len({key, caption_key(b"image2", identity, "describe"), caption_key(b"image", {**identity, "hash": "2"},
                                                                            "describe"),
                caption_key(b"image", identity, "other")}) == 4
    cache = CaptionCache(str(tmp_path / "cache"))
    assert cache.get(key) is None
    writers = [threading.Thread(target=cache.put, args=(key, "a caption")) for _ in range(8)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert cache.get(key) == "a caption" and not list((tmp_path / "cache").rglob("*.tmp"))


@pytest.mark.parametrize("overrides, message", [
    (["backend=transformers"], "backend transformers needs a model"),
    (["output=files"], "output 'files': use inline or sidecar"),
    (["model=x", "max_pixels=100"], "min_pixels <= max_pixels"),
    (["modle=x"], "did you mean model"),
])
def test_a_broken_caption_config_says_what_to_change(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CaptionConfig, None, overrides)


def _gpt2_folder(tmp_path):
    from transformers import GPT2Config
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    return tmp_path / "gpt2"


@pytest.mark.parametrize("case", ["missing folder", "hub id offline", "not a VLM", "vllm absent"])
def test_a_model_that_cannot_caption_stops_the_job_before_any_work(case, tmp_path, monkeypatch):
    from ray_jobs.captioning import run_caption
    from ray_jobs.jobs import RunOptions

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing is downloaded already
    write_shard(tmp_path / "in")
    settings, message = {
        "missing folder": (["model=/no/such/model"], r"model /no/such/model: no such folder; give a folder"),
        "hub id offline": (["model=Qwen/Qwen2-VL-2B-Instruct"],
                           r"not in the local Hugging Face cache; HF_HUB_OFFLINE is set.*hf download"),
        "not a VLM": ([f"model={_gpt2_folder(tmp_path)}"], r"is a 'gpt2' model, not a vision-language model"),
        "vllm absent": (["model=x", "backend=vllm"], r"pip install 'pairforge\[vllm\]'"),
    }[case]
    config = load_config(CaptionConfig, None, settings)
    with pytest.raises(ConfigError, match=message):
        run_caption(config, tmp_path / "in", tmp_path / "out", RunOptions(runner="local", progress=False))
    assert not (tmp_path / "out").exists()


def _images(n: int) -> list:
    from curate.caption.models import prepare_image

    rng = np.random.default_rng(0)
    return [prepare_image(rng.integers(0, 255, (60 + 30 * i, 40 + 10 * i, 3), dtype=np.uint8), 4 * 784, 16 * 784)
            for i in range(n)]


@pytest.mark.slow
def test_batched_generation_writes_what_one_image_at_a_time_does(tiny_qwen2vl, monkeypatch):
    from curate.caption.models import TransformersCaptioner, model_identity

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config(CaptionConfig, None, [f"model={tiny_qwen2vl}", "generation.max_new_tokens=10",
                                               "min_pixels=3136", "max_pixels=12544"])
    captioner = TransformersCaptioner(config, model_identity(config))
    images = _images(4)  # four sizes: a batch pads on the left
    prompts = ["Describe the image.", "Describe the image.", "Describe the character.", "Describe the image."]
    batched = captioner.caption(images, prompts)
    alone = [captioner.caption([image], [prompt])[0] for image, prompt in zip(images, prompts)]
    assert batched == alone
    assert len(set(batched)) == 4 and all(batched)  # the text depends on the image: not a constant


@pytest.mark.slow
def test_an_image_the_processor_refuses_is_a_reject_and_the_others_are_captioned(tiny_qwen2vl, tmp_path):
    from ray_jobs.captioning import run_caption
    from ray_jobs.jobs import RunOptions
    from shards.reader import iter_dataset
    from shards.schema import SYNTHETIC_PAIR
    from shards.writer import ShardWriter, read_manifest

    with ShardWriter(tmp_path / "in", "shard-000000", SYNTHETIC_PAIR, "h") as writer:
        writer.write(make_record("a-1"))
        sliver = make_record("a-2")  # 1 x 300 px: an aspect ratio Qwen2-VL's processor refuses
        sliver["src.png"] = png_bytes(np.full((1, 300, 4), 200, np.uint8))
        writer.write(sliver)
        broken = make_record("a-3")
        broken["src.png"] = b"not a png"
        writer.write(broken)
        writer.write(make_record("a-4"))
    config = load_config(CaptionConfig, None, [f"model={tiny_qwen2vl}", "generation.max_new_tokens=4",
                                               "min_pixels=3136", "max_pixels=12544"])
    summary = run_caption(config, tmp_path / "in", tmp_path / "out", RunOptions(runner="local", progress=False))
    assert summary.done == 2 and summary.reasons == {"caption": 2}
    errors = {r["key"]: r["error"] for r in read_manifest(tmp_path / "out", "shard-000000")["rejects"]}
    assert "aspect ratio must be smaller than 200" in errors["a-2"] and errors["a-3"].startswith("caption: src.png refused")
    assert [r["__key__"] for r in iter_dataset(tmp_path / "out")] == ["a-1", "a-4"]
