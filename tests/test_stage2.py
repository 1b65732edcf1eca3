"""Stage II training (train/stage2.py, train/models/personalizer) on the tiny SDXL pipeline and real
pairs written through the data contract: two steps change only the adapter (every frozen tensor
compared bit for bit); the saved adapter loads into a stock StableDiffusionXLPipeline with
load_ip_adapter and generates; photos of other shapes go to their aspect bucket with SDXL's size
and crop conditioning; a run saved at step 2 and resumed equals one never stopped at step 4; an
adapter that does not fit the base or image encoder, or data of another kind, stops before any work."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ray_jobs.cli import main
from ray_jobs.config import ConfigError
from ray_jobs.training import run_train_stage2
from tests.tools.stage2_data import frozen_tensors, make_stage2_data, tiny_stage2_config
from tests.tools.trained_run import data_and_trained_run

pytestmark = pytest.mark.slow
BUCKETS = "buckets=[[80, 80], [96, 64]]"  # beside 64x96: the test photos are 80x120, 96x96 and 120x80


data, trained = data_and_trained_run(make_stage2_data, run_train_stage2, tiny_stage2_config, "real_pairs",
                                     "steps=4", "checkpoint_every=2", "batch_size=3", BUCKETS)


def test_bucket_decoder_sets_size_and_crop_conditioning():
    from train.stage2 import BucketDecoder

    decoder = BucketDecoder("real_pair", (64, 96), [(80, 80), (96, 64)], ref_size=(64, 64))
    reference = np.full((96, 64, 3), 255, np.uint8)
    for (w, h), bucket, crop in (((80, 120), (64, 96), (0, 0)), ((100, 90), (80, 80), (0, 4)),
                                 ((200, 100), (96, 64), (0, 16)), ((40, 100), (64, 96), (32, 0))):
        photo = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
        sample = decoder({"__key__": "k", "ref.png": reference, "target.jpg": photo, "txt": "t"})
        assert sample["target"].shape == (3, bucket[1], bucket[0]) and sample["ref"].shape == (3, 64, 64)
        # SDXL's add_time_ids: original (h, w), crop (top, left) in the resized photo, target (h, w)
        assert sample["time_ids"].tolist() == [h, w, *crop, bucket[1], bucket[0]], (w, h)


def test_only_the_adapter_trains_and_a_stock_pipeline_loads_it(data, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from PIL import Image

    from shards.reader import iter_dataset
    from train.data.kinds import place
    from train.models.personalizer import ADAPTER_FILE
    from train.stage2 import Trainer

    config = tiny_stage2_config(data, "steps=2", "batch_size=3", BUCKETS, "validation_samples=0")
    trainer = Trainer(config, str(data / "real_pairs"), tmp_path)
    before, adapter_before = frozen_tensors(trainer), [p.detach().clone() for p in trainer.parameters]
    assert len(adapter_before) == 3 * 2 + 7 * 2  # projection (2 linear + norm, weight+bias) + k/v in 7 attn2
    batches = iter(trainer.loader)
    losses = [trainer.train_step(next(batches)) for _ in range(2)]
    assert all(np.isfinite(losses))
    after = frozen_tensors(trainer)
    assert before.keys() == after.keys() and len(before) > 200
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not torch.equal(a, p) for a, p in zip(adapter_before, trainer.parameters))
    final = trainer.save_final()

    pipe = StableDiffusionXLPipeline.from_pretrained(data / "base")  # stock: no image encoder of its own
    pipe.load_ip_adapter(str(final), subfolder="", weight_name=ADAPTER_FILE)
    record = next(iter_dataset(data / "real_pairs"))
    reference = Image.fromarray(place(record["ref.png"], (64, 64), 255))  # square on white, as training feeds it
    image = pipe("a character, waving", ip_adapter_image=reference, height=96, width=64, num_inference_steps=2,
                 guidance_scale=2.0, generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (96, 64, 3) and np.isfinite(image).all() and image.std() > 0
    loaded = load_file(final / ADAPTER_FILE)
    assert all(k.startswith(("image_proj.proj.", "ip_adapter.")) for k in loaded) and len(loaded) == 20
    (projection,) = pipe.unet.encoder_hid_proj.image_projection_layers
    assert torch.equal(projection.norm.weight, trainer.unet.encoder_hid_proj.image_projection_layers[0].norm.weight)


def test_resumed_run_equals_uninterrupted(data, trained, tmp_path):
    from train.models.personalizer import ADAPTER_FILE

    out, result = trained
    assert result["step"] == 4 and result["problems"] == 0 and all(np.isfinite(result["losses"]))
    config = tiny_stage2_config(data, "steps=2", "checkpoint_every=2", "batch_size=3", BUCKETS)
    run_train_stage2(config, str(data / "real_pairs"), tmp_path, progress=False)
    assert main(["train", "stage2", "--data", str(data / "real_pairs"), "--out", str(tmp_path), "--config", "stage2-tiny",
                 "--set", f"base={data / 'base'}", "--set", f"image_encoder={data / 'base' / 'ip_image_encoder'}",
                 "--set", 'image_encoder_subfolder=""', "--set", "steps=4", "--set", "checkpoint_every=2",
                 "--set", "batch_size=3", "--set", BUCKETS, "--quiet"]) == 0
    resumed = json.loads((tmp_path / "ranks" / "rank-0.json").read_text())
    uninterrupted = json.loads((out / "ranks" / "rank-0.json").read_text())
    assert resumed["keys"] == uninterrupted["keys"][6:]  # steps 3-4 read the same samples
    a, b = (load_file(d / "checkpoints" / "step-000004" / ADAPTER_FILE) for d in (out, tmp_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    step2 = load_file(out / "checkpoints" / "step-000002" / ADAPTER_FILE)
    assert not all(torch.equal(a[k], step2[k]) for k in a)
    assert (out / "final" / "image_encoder" / "config.json").exists() and list((out / "logs").glob("events.*"))
    assert result["grid"].endswith("step-000004.png")


def test_wrong_inputs_stop_before_any_work(data, trained, tmp_path):
    from diffusers.models.embeddings import IPAdapterFullImageProjection
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from train.models.personalizer import ADAPTER_FILE

    out, _ = trained
    config = tiny_stage2_config(data, f"adapter={out / 'final'}")
    with pytest.raises(ConfigError, match="real_pair"):
        run_train_stage2(config, str(data / "pairs"), tmp_path / "a", progress=False)
    wide = tmp_path / "wide-encoder"
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=48, intermediate_size=37, num_hidden_layers=1,
                                                   num_attention_heads=4, image_size=64, patch_size=4,
                                                   projection_dim=32)).save_pretrained(wide)
    with pytest.raises(ConfigError, match="image encoder's hidden size is 48: set image_encoder="):
        run_train_stage2(dataclasses.replace(config, image_encoder=str(wide)), str(data / "real_pairs"),
                         tmp_path / "b", progress=False)
    other = tmp_path / "other-adapter"
    other.mkdir()
    (other / "personalizer.json").write_text((out / "final" / "personalizer.json").read_text())
    weights = load_file(out / "final" / ADAPTER_FILE)
    projection = IPAdapterFullImageProjection(image_embed_dim=32, cross_attention_dim=48).state_dict()
    weights.update({"image_proj.proj.2.weight": projection["ff.net.2.weight"], "image_proj.proj.2.bias": projection["ff.net.2.bias"],
                    "image_proj.proj.3.weight": projection["norm.weight"], "image_proj.proj.3.bias": projection["norm.bias"]})
    save_file(weights, str(other / ADAPTER_FILE))
    with pytest.raises(ConfigError, match="cross-attention width is 64 .* set base="):
        run_train_stage2(dataclasses.replace(config, adapter=str(other)), str(data / "real_pairs"), tmp_path / "c",
                         progress=False)
    assert not any((tmp_path / d).exists() for d in "abc")
    with pytest.raises(ConfigError, match="not a Stage II adapter"):
        run_train_stage2(dataclasses.replace(config, adapter=str(data / "base")), str(data / "real_pairs"),
                         tmp_path / "d", progress=False)


def test_demo_stage2_trains_saves_and_generates(data, tmp_path):
    from PIL import Image

    from ray_jobs.training import demo_stage2

    lines = demo_stage2(tmp_path, data / "real_pairs", overwrite=False)
    assert len(lines) == 3 and "2 IP-Adapter steps" in lines[0]
    image = np.asarray(Image.open(tmp_path / "generated.png"))
    assert image.shape == (96, 64, 3) and image.std() > 0
    assert demo_stage2(tmp_path, data / "real_pairs", overwrite=False)[0].count("already trained") == 1  # re-run: resumed, no steps


def test_final_adapter_holds_the_ema_weights_and_training_keeps_its_own(data, tmp_path):
    """With EMA on, OUT/final is written from the EMA weights (train.loop.ema_weights) and the
    parameters the optimizer steps are back in place afterwards."""
    from train.models.personalizer import ADAPTER_FILE
    from train.stage2 import Trainer

    config = tiny_stage2_config(data, "steps=2", "batch_size=2", "validation_samples=0", "ema_decay=0.5")
    trainer = Trainer(config, str(data / "real_pairs"), tmp_path)
    batches = iter(trainer.loader)
    for _ in range(2):
        trainer.train_step(next(batches))
    own = [p.detach().clone() for p in trainer.parameters]
    shadow = [s.detach().clone() for s in trainer.ema.shadow_params]
    saved = load_file(trainer.save_final() / ADAPTER_FILE)
    assert all(torch.equal(a, p) for a, p in zip(own, trainer.parameters))  # restored
    assert not all(torch.equal(a, s) for a, s in zip(own, shadow))
    projection = trainer.unet.encoder_hid_proj.image_projection_layers[0]
    index = [id(p) for p in trainer.parameters].index(id(projection.norm.weight))
    assert torch.equal(saved["image_proj.proj.3.weight"], shadow[index])
