"""`pairforge eval stage2` (train/evaluate.py) on a tiny trained adapter, the tiny SDXL pipeline and a
tiny CLIPModel (text + vision) built from a config and loaded by path: the table (json, csv, md) with
finite CLIP-I, CLIP-T and AP-CLIP-I, the grid and the images; the metrics' definitions checked on
known images; an adapter that does not fit the base stops before any generation."""
import json

import numpy as np
import pytest

from ray_jobs.cli import main
from ray_jobs.training import run_train_stage2
from tests.tools.stage2_data import make_stage2_data, tiny_stage2_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from train.models.tiny import tiny_clip_tokenizer

    work = tmp_path_factory.mktemp("eval")
    data = make_stage2_data(work / "data")
    run_train_stage2(tiny_stage2_config(data, "steps=2", "checkpoint_every=2", "validation_samples=0"),
                     str(data / "real_pairs"), work / "run", progress=False)
    tokenizer = tiny_clip_tokenizer()
    clip = work / "clip"
    CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=4), projection_dim=16)).save_pretrained(clip)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(clip)
    prompts = work / "prompts.txt"
    prompts.write_text("a character cooking in the park\n\na character reading, side view\n")
    return data, work / "run" / "final", clip, prompts


def test_eval_writes_table_grid_and_images(setup, tmp_path):
    data, adapter, clip, prompts = setup
    code = main(["eval", "stage2", "--adapter", str(adapter), "--prompts", str(prompts), "--out", str(tmp_path),
                 "--set", f"clip_model={clip}", "--set", "images_per_prompt=2", "--set", "inference_steps=2",
                 "--set", "resolution=[64, 96]", "--set", "background=mediapipe", "--set", "max_references=2"])
    assert code == 0
    table = json.loads((tmp_path / "metrics.json").read_text())
    rows = table["rows"]
    assert [r["reference"] for r in rows][-1] == "mean" and len(rows) == 3  # 2 held-out references + the mean
    for row in rows:
        assert all(np.isfinite(row[m]) and abs(row[m]) <= 100 + 1e-3 for m in ("clip_i", "clip_t", "ap_clip_i"))
    assert rows[0]["images"] == 4 and len(list((tmp_path / "images").glob("*.png"))) == 8
    assert "not computed" in table["face_similarity"] and 0 <= table["person_found"] <= 1  # tiny-model noise: 0
    assert (tmp_path / "metrics.csv").read_text().startswith("reference,clip_i,clip_t,ap_clip_i,face_sim,images")
    assert "| mean |" in (tmp_path / "metrics.md").read_text()
    from PIL import Image
    assert Image.open(tmp_path / "grid.png").size == (64 * 3, 96 * 2)  # reference + one image per prompt, per reference


def test_metric_definitions_on_known_images(setup):
    """CLIP-I of an image with itself is 100; the white threshold keeps the figure and removes a
    background, so a figure on two backgrounds scores 100 once both are removed."""
    from train.evaluate import Clip, on_white_where, white_mask

    _, _, clip_path, _ = setup
    clip = Clip(str(clip_path), "cpu")
    figure = np.full((96, 64, 3), 255, np.uint8)
    figure[20:80, 20:44] = (180, 40, 40)
    mask = white_mask(figure, 240)
    assert mask[50, 30] == 255 and mask[5, 5] == 0
    scenes = [np.where(mask[..., None] > 0, figure, np.uint8(colour)) for colour in ((30, 120, 200), (20, 200, 60))]
    kept = clip.images([on_white_where(s, mask) for s in scenes])
    raw = clip.images(scenes)
    assert float(kept[0] @ kept[1]) == pytest.approx(1.0, abs=1e-5)
    assert float(raw[0] @ raw[1]) < 0.9999


def test_adapter_that_does_not_fit_the_base_stops_first(setup, tmp_path):
    from train.models.tiny import build_tiny_base

    data, adapter, clip, prompts = setup
    sd15 = build_tiny_base(tmp_path / "sd15")  # cross-attention width 32, not the adapter's 64
    code = main(["eval", "stage2", "--adapter", str(adapter), "--prompts", str(prompts), "--out", str(tmp_path / "o"),
                 "--set", f"base={sd15}", "--set", f"clip_model={clip}"])
    assert code == 2 and not (tmp_path / "o" / "images").exists()
    assert main(["eval", "stage2", "--adapter", str(data / "base"), "--prompts", str(prompts),
                 "--out", str(tmp_path / "p")]) == 2


@pytest.fixture(scope="module")
def face_model(tmp_path_factory):
    """A tiny face-recognition network (112x112 RGB -> 16-d) exported to ONNX as insightface's
    models are: the real onnxruntime path with random weights."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 2, 1),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 28 * 28, 16))
    path = tmp_path_factory.mktemp("face") / "face.onnx"
    torch.onnx.export(net.eval(), (torch.randn(1, 3, 112, 112),), str(path), input_names=["input.1"],
                      output_names=["embedding"], dynamic_axes={"input.1": {0: "batch"}}, dynamo=False)
    return path


def test_face_similarity_on_known_faces(face_model):
    """The astronaut's face against itself scores 100, against the mirrored photo less; an image
    with no face is not counted, and a reference without a face gives no figure."""
    import skimage.data

    from curate.people import make_detector
    from train.evaluate import FaceEmbedder, face_similarity

    detector = make_detector("mediapipe")
    faces, photo, coffee = FaceEmbedder(str(face_model)), skimage.data.astronaut(), skimage.data.coffee()
    mirror = np.ascontiguousarray(photo[:, ::-1])
    box = {name: detector.detect(image).face_box for name, image in (("photo", photo), ("coffee", coffee),
                                                                      ("mirror", mirror))}
    same, found = face_similarity(faces, photo, box["photo"], [photo, coffee], [box["photo"], box["coffee"]], 0.2)
    assert found == 1 and same == pytest.approx(100, abs=1e-3)
    mirrored, found = face_similarity(faces, photo, box["photo"], [mirror], [box["mirror"]], 0.2)
    assert found == 1 and mirrored < 99.9
    assert face_similarity(faces, coffee, box["coffee"], [photo], [box["photo"]], 0.2) == (None, 0)


def test_eval_with_a_face_model_reports_face_sim(setup, face_model, tmp_path):
    data, adapter, clip, prompts = setup
    assert main(["eval", "stage2", "--adapter", str(adapter), "--prompts", str(prompts), "--out", str(tmp_path),
                 "--set", f"clip_model={clip}", "--set", "images_per_prompt=1", "--set", "inference_steps=2",
                 "--set", "resolution=[64, 96]", "--set", "background=white", "--set", "max_references=1",
                 "--set", f"face_model={face_model}"]) == 0
    table = json.loads((tmp_path / "metrics.json").read_text())
    assert table["face_similarity"].startswith(f"{face_model}: faces found in ")  # tiny-model noise: likely none
    assert "face_sim" in table["rows"][0] and "Face Sim." in (tmp_path / "metrics.md").read_text()
    assert main(["eval", "stage2", "--adapter", str(adapter), "--prompts", str(prompts), "--out", str(tmp_path / "x"),
                 "--set", f"clip_model={clip}", "--set", "face_model=/nowhere/w600k_r50.onnx"]) == 2
