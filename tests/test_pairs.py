"""Real pairs (pairs/build.py, pairs/gate.py, ray_jobs/pairs.py) with a tiny untrained
standardizer and real curated photos (scikit-image's, through `curate photos`' code): photos
become pairs whose target.jpg is the curated bytes; a job SIGKILLed at a random point and re-run
ends with the bytes of an uninterrupted run without redoing a finished shard; photos the
standardizer cannot take are rejects with their reasons; what cannot work stops before any work;
and the gate's known answers on standardized renders (A-pose on white) of generated humans."""
import json
import random
import signal
import subprocess
import time

import numpy as np
import pytest

from ray_jobs.config import ConfigError, load_config
from ray_jobs.jobs import RunOptions
from shards.reader import iter_dataset, iter_shard
from tests.helpers import ROOT

pytestmark = pytest.mark.slow
LOCAL = RunOptions(runner="local", progress=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(root, the tiny standardizer, a folder of curated photo shards: one kept photo per shard)."""
    import skimage.data
    from PIL import Image

    from curate.stages import PhotoJobConfig
    from ray_jobs.curation import run_curate_photos
    from ray_jobs.pairs import tiny_standardizer
    from shards.encoding import encode_jpeg
    from shards.schema import PHOTO
    from shards.writer import ShardWriter

    root = tmp_path_factory.mktemp("pairs")
    checkpoint = tiny_standardizer(root / "tiny", characters=2)
    raw = root / "photos-in"
    raw.mkdir()
    astronaut = skimage.data.astronaut()
    for name, image in {"astronaut": astronaut, "mirrored": astronaut[:, ::-1],
                        "camera": np.repeat(skimage.data.camera()[..., None], 3, axis=2),
                        "coffee": skimage.data.coffee()}.items():
        (raw / f"{name}.jpg").write_bytes(encode_jpeg(np.ascontiguousarray(image), 92))
    summary = run_curate_photos(PhotoJobConfig(), str(raw), root / "curated", LOCAL)
    kept = [r for r in iter_dataset(root / "curated" / "photos", decode=False)]
    assert summary.done == len(kept) >= 2
    # Six shards of one photo each (the kept photos again under new keys): a job with shards to resume.
    for i in range(6):
        with ShardWriter(root / "photos", f"shard-{i:06d}", PHOTO, "test") as writer:
            writer.write({**kept[i % len(kept)], "__key__": f"photo{i}"})
    Image.fromarray(astronaut).save(root / "raw.png")
    return root, checkpoint


@pytest.fixture(scope="module")
def tiny_config(made, tiny_qwen2vl):
    from pairs.build import PairsConfig

    _, checkpoint = made
    return load_config(PairsConfig, "pairs-tiny", [f"standardize.checkpoint={checkpoint}",
                                                   f"caption.model={tiny_qwen2vl}"])


@pytest.fixture(scope="module")
def uninterrupted(made, tiny_config):
    from ray_jobs.pairs import run_pairs

    root, _ = made
    return run_pairs(tiny_config, root / "photos", root / "uninterrupted", LOCAL), root / "uninterrupted"


def shard_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.tar"))}


def test_photos_become_pairs_with_the_curated_bytes(made, uninterrupted, tiny_config, tiny_qwen2vl):
    from ray_jobs.pairs import run_pairs
    from shards.inspect import inspect_dataset

    root, checkpoint = made
    summary, out = uninterrupted
    assert summary.done == 6 and summary.rejected == 0
    photos = {r["__key__"]: r for r in iter_dataset(root / "photos", decode=False)}
    identity = json.loads((checkpoint / "standardizer.json").read_text())
    for raw, record in zip(iter_dataset(out, decode=False), iter_dataset(out)):
        photo = photos[raw["__key__"]]
        assert raw["target.jpg"] == photo["image.jpg"]  # the photo's bytes as curated, not re-encoded
        assert record["ref.png"].shape == record["target.jpg"].shape  # at the photo's size
        meta, curated = record["json"], json.loads(photo["json"])
        assert meta["photo_id"] == raw["__key__"] and meta["photo_source"] == curated["source"]
        assert meta["checkpoint_sha256"] == identity["weights_sha256"] and meta["split"] in ("train", "test")
        assert meta["caption"]["from"] == "model" and meta["caption"]["model"] == str(tiny_qwen2vl)
        assert meta["caption"]["prompt"].startswith("Describe this photo")
        assert meta["curation"] == curated["scores"] and record["txt"]
        assert set(meta["gate"]) == {"foreground", "identity"} and -1 <= meta["gate"]["identity"] <= 1
    assert inspect_dataset(out).ok
    again = run_pairs(tiny_config, root / "photos", out, LOCAL)
    assert again.shards_skipped == again.shards_total == 6


def test_photos_to_pairs_to_two_stage2_steps_to_an_image_from_a_stock_pipeline(uninterrupted, tmp_path):
    """Issue 18's whole path on tiny models: curated photos -> real pairs (above) -> two Stage II
    steps that change only the adapter -> the saved adapter in a stock StableDiffusionXLPipeline
    (load_ip_adapter) -> one image."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from PIL import Image

    from ray_jobs.config import load_config
    from tests.tools.stage2_data import frozen_tensors
    from train.data.kinds import place
    from train.models.personalizer import ADAPTER_FILE
    from train.models.tiny import build_tiny_sdxl_pipeline
    from train.stage2 import Stage2Config, Trainer

    _, pairs = uninterrupted
    base = build_tiny_sdxl_pipeline(tmp_path / "base")
    config = load_config(Stage2Config, "stage2-tiny", [f"base={base}", f"image_encoder={base / 'ip_image_encoder'}",
                                                       'image_encoder_subfolder=""', "steps=2", "batch_size=2",
                                                       "validation_samples=0"])
    trainer = Trainer(config, str(pairs), tmp_path / "run")
    frozen, adapter = frozen_tensors(trainer), [p.detach().clone() for p in trainer.parameters]
    batches = iter(trainer.loader)
    assert all(np.isfinite(trainer.train_step(next(batches))) for _ in range(2))
    after = frozen_tensors(trainer)
    assert after.keys() == frozen.keys() and all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert all(not torch.equal(a, p) for a, p in zip(adapter, trainer.parameters))
    final = trainer.save_final()
    pipe = StableDiffusionXLPipeline.from_pretrained(base)
    pipe.load_ip_adapter(str(final), subfolder="", weight_name=ADAPTER_FILE)
    reference = next(iter_dataset(pairs))["ref.png"]
    side = pipe.image_encoder.config.image_size
    image = pipe("a person, smiling", ip_adapter_image=Image.fromarray(place(reference, (side, side), 255)), height=96,
                 width=64, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (96, 64, 3) and np.isfinite(image).all() and image.std() > 0


@pytest.mark.timeout(300)
def test_a_job_killed_at_a_random_point_resumes_to_the_same_records(made, uninterrupted, tiny_config, tiny_qwen2vl,
                                                                   tmp_path):
    from ray_jobs.pairs import run_pairs

    root, checkpoint = made
    _, expected = uninterrupted
    job = tmp_path / "job"
    command = [str(ROOT / ".venv" / "bin" / "pairforge"), "pairs", "--photos", str(root / "photos"),
               "--checkpoint", str(checkpoint), "--out", str(job), "--config", "pairs-tiny",
               "--set", f"caption.model={tiny_qwen2vl}", "--runner", "local", "--quiet"]
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 200
    while not list(job.glob("shard-*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    delay = random.uniform(0.0, 2.0)  # a random point once the job is under way
    time.sleep(delay)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in job.glob("shard-*.json")}
    assert 1 <= len(finished) <= 6
    resumed = run_pairs(tiny_config, root / "photos", job, LOCAL)
    assert resumed.shards_skipped == len(finished), f"killed {delay:.2f} s in"
    assert {name: (job / name).stat().st_mtime_ns for name in finished} == finished  # never redone
    assert shard_bytes(job) == shard_bytes(expected), f"killed {delay:.2f} s in"


def test_photos_the_standardizer_cannot_take_are_rejects_and_the_job_goes_on(made, tmp_path):
    from pairs.build import PairsConfig
    from ray_jobs.pairs import run_pairs
    from shards.schema import PHOTO
    from shards.writer import ShardWriter

    root, checkpoint = made
    good = next(iter_shard(str(root / "photos" / "shard-000000.tar"), decode=False))
    with ShardWriter(tmp_path / "photos", "shard-000000", PHOTO, "test") as writer:
        writer.write({**good, "__key__": "own", "txt": b"an astronaut in an orange suit"})
        writer.write({**good, "__key__": "corrupt", "image.jpg": good["image.jpg"][:200]})
        writer.write({**good, "__key__": "small-mask", "mask.png": good["mask.png"],
                      "image.jpg": _smaller_jpeg(good["image.jpg"])})
    # The photos bring their own caption: no caption model is needed (caption.model stays empty).
    config = load_config(PairsConfig, "pairs-tiny", [f"standardize.checkpoint={checkpoint}"])
    summary = run_pairs(config, tmp_path / "photos", tmp_path / "out", LOCAL)
    assert summary.done == 1 and summary.rejected == 2 and summary.reasons["input"] == 2
    manifest = json.loads((tmp_path / "out" / "shard-000000.json").read_text())
    errors = {r["key"]: r["error"] for r in manifest["rejects"]}
    assert errors["corrupt"].startswith("input: image.jpg: OSError")
    assert errors["small-mask"] == "input: ValueError: mask.png is 512x512, image.jpg 256x256"
    (record,) = iter_dataset(tmp_path / "out")
    assert record["txt"] == "an astronaut in an orange suit" and record["json"]["caption"] == {"from": "photo"}
    # Every gate reject carries its reason and its scores.
    strict = load_config(PairsConfig, "pairs-tiny", [f"standardize.checkpoint={checkpoint}", "gate.min_similarity=1.0"])
    run_pairs(strict, tmp_path / "photos", tmp_path / "strict", LOCAL)
    (gated,) = [r for r in json.loads((tmp_path / "strict" / "shard-000000.json").read_text())["rejects"]
                if r["key"] == "own"]
    assert gated["error"].startswith("gate-identity: the reference no longer looks like the photo's person")
    assert gated["gate"]["identity"] < 1.0 and gated["gate"]["foreground"] > 0.5


def _smaller_jpeg(data: bytes) -> bytes:
    import io

    from PIL import Image

    from shards.encoding import encode_jpeg
    return encode_jpeg(np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((256, 256))), 90)


def test_what_cannot_work_stops_before_any_work(made, tmp_path):
    from pairs.build import PairsConfig
    from ray_jobs.cli import main
    from ray_jobs.pairs import run_pairs

    root, checkpoint = made
    config = load_config(PairsConfig, "pairs-tiny", [f"standardize.checkpoint={checkpoint}"])
    not_a_standardizer = load_config(PairsConfig, "pairs-tiny", [f"standardize.checkpoint={root / 'tiny' / 'render'}"])
    with pytest.raises(ConfigError, match="is not a standardizer checkpoint: it has no readable standardizer.json"):
        run_pairs(not_a_standardizer, root / "photos", tmp_path / "a", LOCAL)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "astronaut.png").write_bytes((root / "raw.png").read_bytes())
    with pytest.raises(ConfigError, match=r"holds 1 image files but no curated photo shards: run `pairforge "
                                          r"curate photos --in .* --out CURATED` first"):
        run_pairs(config, raw, tmp_path / "b", LOCAL)
    with pytest.raises(ConfigError, match="holds synthetic_pair records, not curated photo records: run "
                                          "`pairforge curate photos"):
        run_pairs(config, root / "tiny" / "render" / "pairs", tmp_path / "c", LOCAL)
    with pytest.raises(ConfigError, match=r"gate.checks: unknown check 'smile'; use any of foreground, face, pose"):
        load_config(PairsConfig, "pairs-tiny", ["gate.checks=[foreground, smile]"])
    with pytest.raises(ConfigError, match="the pose check needs mediapipe"):
        load_config(PairsConfig, "pairs-tiny", ["gate.checks=[pose]", "gate.detector=opencv"])
    with pytest.raises(ConfigError, match=r"ref_size=\[512, 0\]"):
        load_config(PairsConfig, "pairs-tiny", ["ref_size=[512, 0]"])
    assert not any((tmp_path / name).exists() for name in "abc")
    # The command line says the same and exits 2.
    code = main(["pairs", "--photos", str(raw), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "d"),
                 "--config", "pairs-tiny", "--runner", "local", "--quiet"])
    assert code == 2 and not (tmp_path / "d").exists()


# ---- the gate's known answers: standardized renders (canonical A-pose on white) of two humans -----

@pytest.fixture(scope="module")
def renders(made):
    """(character 0's photo on white and its mask, its A-pose render, character 1's, the standard pose)."""
    from train.data.kinds import on_white

    root, checkpoint = made
    records = list(iter_dataset(root / "tiny" / "render" / "pairs"))
    assert len({r["json"]["character_id"] for r in records}) == 2
    first, other = records
    standard = np.asarray(json.loads((checkpoint / "standardizer.json").read_text())["standard_pose"], np.float32)
    return on_white(first["src.png"]), first["src.png"][..., 3], first["std.png"], other["std.png"], standard


@pytest.fixture(scope="module")
def detector():
    from curate.people import make_detector
    found = make_detector("mediapipe")
    yield found
    found.close()


def gate(renders, detector, reference, **settings):
    from pairs.gate import GateConfig, histogram_embeddings, judge, similarities

    photo, mask, _, _, standard = renders
    config = GateConfig(embedder="hsv-histogram", min_similarity=0.85, **settings)
    (similarity,) = similarities(histogram_embeddings, [photo], [mask], [reference])
    return judge(config, reference, standard, detector, similarity)


def test_the_gate_passes_the_persons_own_a_pose_render_even_moved(renders, detector):
    _, _, own, _, _ = renders
    reason, scores = gate(renders, detector, own)
    assert reason is None, (reason, scores)
    assert scores["foreground"] > 0.1 and scores["face"] > 0.5 and scores["pose"] < 0.1 and scores["identity"] > 0.9
    moved = np.full_like(own, 255)
    moved[30:, 40:] = own[:-30, :-40]  # shifted right and down, a hand cut off: still the person in the A-pose
    reason, scores = gate(renders, detector, moved)
    assert reason is None, (reason, scores)


def test_the_gate_rejects_each_failure_with_its_reason_and_score(renders, detector):
    photo, _, own, other, _ = renders
    reason, scores = gate(renders, detector, np.full_like(own, 255))
    assert reason.startswith("gate-foreground: the reference lost the person (0.0% not white") and scores["foreground"] == 0
    faceless = own.copy()
    faceless[:110] = 255  # the head whited out
    reason, scores = gate(renders, detector, faceless, checks=("foreground", "face"))
    assert reason.startswith("gate-face: no face found on the reference") and scores["face"] < 0.5
    reason, scores = gate(renders, detector, photo, checks=("pose",))  # the photo's own pose, not the A-pose
    assert reason.startswith("gate-pose: not in the standard A-pose") and scores["pose"] > 0.15, scores
    reason, scores = gate(renders, detector, other)  # another person in the A-pose
    assert reason.startswith("gate-identity: the reference no longer looks like the photo's person"), scores
    assert scores["identity"] < 0.5 and scores["pose"] < 0.1
    recoloured = np.ascontiguousarray(own[..., ::-1])  # the same figure with other skin and clothing colours
    reason, scores = gate(renders, detector, recoloured, checks=("identity",))
    assert reason.startswith("gate-identity") and scores["identity"] < 0.85


def test_the_demo_step_makes_pairs_and_says_the_gate_is_relaxed(made, tmp_path):
    from ray_jobs.pairs import demo_pairs

    root, checkpoint = made
    (line,), made_pairs = demo_pairs(tmp_path, str(checkpoint), root / "curated")
    kept = len(list(iter_dataset(root / "curated" / "photos")))
    assert made_pairs == kept == len(list(iter_dataset(tmp_path / "real-pairs")))
    assert line.startswith(f"real pairs (tiny standardizer, tiny Qwen2-VL captions): {kept} pairs, 0 rejected")
    assert "gate relaxed for the tiny model's noise: checks foreground, identity (face and pose off)" in line
