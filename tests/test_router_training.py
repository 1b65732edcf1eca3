"""Router training (train/router.py) and segmentation (train/segment.py) on the tiny SDXL-shaped base
and router scenes made by the project's own jobs: a run saved at step 2 and resumed gives, at step
4, the same router as one never stopped; a short training on a base whose UNet was trained as a
denoiser learns the masks of its training scenes beyond a layout-blind baseline, and on unseen
characters beats that baseline too and routes by who is who (right references against rotated ones);
records whose mask count does not match their subjects, or whose masks overlap, are skipped by the
loader with their reason and training goes on;
`pairforge segment` writes one mask per subject, and names a moved base (`--set base=` points at
it); wrong inputs stop before any work."""
import dataclasses
import io
import json
import shutil
import tarfile
from hashlib import sha256

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ray_jobs.cli import main
from ray_jobs.config import ConfigError
from ray_jobs.training import run_train_router
from tests.tools.router_data import make_pairs_of_unseen_characters, make_router_data, tiny_router_config
from tests.tools.trained_run import data_and_trained_run

pytestmark = pytest.mark.slow


data, trained = data_and_trained_run(make_router_data, run_train_router, tiny_router_config, "router",
                                     "steps=4", "checkpoint_every=2", "validation_samples=4")


def router_weights(folder):
    return load_file(folder / "router" / "diffusion_pytorch_model.safetensors")


def test_resumed_run_equals_uninterrupted(data, trained, tmp_path):
    out, result = trained
    assert result["step"] == 4 and all(np.isfinite(l["loss"]) for l in result["losses"])
    config = tiny_router_config(data, "steps=2", "checkpoint_every=2", "validation_samples=4")
    run_train_router(config, str(data / "router"), tmp_path, progress=False)
    resumed = run_train_router(dataclasses.replace(config, steps=4), str(data / "router"), tmp_path, progress=False)
    assert resumed["steps_run"] == 2 and resumed["losses"] == result["losses"][2:]
    a, b = router_weights(out / "checkpoints" / "step-000004"), router_weights(tmp_path / "checkpoints" / "step-000004")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], v) for k, v in router_weights(out / "checkpoints" / "step-000002").items())
    frozen_before = load_file(out / "checkpoints" / "step-000002" / "subject_encoder" / "diffusion_pytorch_model.safetensors")
    frozen_after = load_file(out / "final" / "subject_encoder" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(frozen_before[k], frozen_after[k]) for k in frozen_before)  # the subject encoder is frozen


def test_figure_logs_and_segment_command(data, trained, tmp_path, capsys):
    out, result = trained
    from train.segment import FIGURE_CELL
    figure = Image.open(result["figure"])
    rows = (figure.size[1] - 14) / FIGURE_CELL  # one row per subject of the first held-out scene, under the labels
    assert rows in (2, 3, 4) and figure.size[0] > (2 + 3 * 7) * 32  # scene | reference | 3 timesteps x 7 layers
    assert list((out / "logs").glob("events.out.tfevents.*"))
    from shards.reader import iter_dataset
    record = next(r for r in iter_dataset(data / "router") if r["json"]["split"] == "test")
    paths = []
    for name in ("image.jpg", "subj0.png", "subj1.png"):
        paths.append(tmp_path / name)
        Image.fromarray(record[name]).save(paths[-1])
    code = main(["segment", "--router", str(out / "final"), "--image", str(paths[0]), "--subjects", str(paths[1]),
                 str(paths[2]), "--out", str(tmp_path / "masks"), "--device", "cpu"])
    assert code == 0
    masks = [np.asarray(Image.open(tmp_path / "masks" / f"mask-{i}.png")) for i in (0, 1)]
    assert all(m.shape == record["image.jpg"].shape[:2] and set(np.unique(m)) <= {0, 255} for m in masks)
    assert not (masks[0] & masks[1]).any()  # each pixel goes to one route
    assert main(["segment", "--router", str(data / "base"), "--image", str(paths[0]), "--subjects", str(paths[1]),
                 "--out", str(tmp_path / "x")]) == 2
    # the base moved: a clear error naming it, and --set pointing at where it is now
    moved = tmp_path / "checkpoint"
    shutil.copytree(out / "final", moved)
    identity = json.loads((moved / "router.json").read_text())
    gone = tmp_path / "old-place" / "base"
    (moved / "router.json").write_text(json.dumps({**identity, "base": str(gone), "image_encoder": str(gone / "image_encoder")}))
    segment_moved = ["segment", "--router", str(moved), "--image", str(paths[0]), "--subjects", str(paths[1]),
                     "--out", str(tmp_path / "moved-masks"), "--device", "cpu"]
    assert main(segment_moved) == 2
    assert f"frozen base {gone} is gone" in capsys.readouterr().err
    assert main([*segment_moved, "--set", f"base={data / 'base'}", "--set", f"image_encoder={data / 'base' / 'image_encoder'}"]) == 0


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """On make_pairs_of_unseen_characters' data (its base's UNet trained as a denoiser for 600 steps:
    a random one's features tell figure from ground too poorly for a router to beat the baseline on
    unseen characters, measured 0.226-0.273 against 0.231-0.273 over three draws), 400 steps at
    128x192 (at 64x96 the layers' grids, 12x8 and 6x4, leave even a perfect router little to gain
    over the baseline) on scenes of two of the ~32 training characters, t in [0, 200)
    (train/router.py's docstring; [0, 500) gave about the same), lr 0.003 (0.01 ended lower on a
    random UNet), the routing loss weighted up so that the diffusion gradient does not drown it;
    then the router's IoUs (right and rotated references, read at segment_timestep 0 as the paper
    segments) and the layout-blind baseline's on 32 training scenes and on the held-out
    (split=test) scenes of the characters no training scene holds."""
    from train.models.router import Conditioning, load_checkpoint
    from train.router import dataset, make_decoder
    from train.segment import Evaluation, layout_blind_masks
    from train.data import ShardStream

    data = make_pairs_of_unseen_characters(tmp_path_factory.mktemp("unseen"))
    out = tmp_path_factory.mktemp("short")
    config = tiny_router_config(data, "resolution=[128, 192]", "steps=400", "checkpoint_every=400",
                                "validation_samples=32", "reference_net=false", "learning_rate=0.003",
                                "routing_weight=10", "max_grad_norm=100", "timesteps=[0, 200]", "batch_size=8",
                                "log_every=50")
    result = run_train_router(config, str(data / "router"), out, progress=False)
    decoder = make_decoder(config, normalize=True)
    train = dataset(data / "router", split="train")
    scenes = [s for s, _ in zip(ShardStream(train, decoder, batch_size=1).samples(epoch=0), range(32))]
    model, frozen, _ = load_checkpoint(out / "final")
    model.eval()
    fitted = Evaluation(scenes, layout_blind_masks(train, decoder), config).ious(model, frozen, Conditioning(frozen, "cpu"))
    return result, fitted


def test_short_training_learns_the_masks_of_its_training_scenes(short_run):
    """The routing maps learn the instance masks of the scenes trained on, beyond what the slots'
    mean masks give. Measured 2026-12-02: mean IoU 0.445 (layout-blind baseline 0.291 on these
    scenes; the router with each scene's references rotated 0.072)."""
    _, (router, baseline, _) = short_run
    assert router > baseline + 0.05, (router, baseline)


def test_short_training_beats_a_layout_blind_baseline_on_unseen_characters(short_run):
    """Held-out mean IoU of the router's masks against the layout-blind baseline (each slot's mean
    training mask, thresholded at half its maximum: it knows where back and front subjects tend to
    stand, and never looks at the image), on the split=test scenes, whose characters no training
    scene holds. Measured 2026-12-02: router 0.311, baseline 0.255; with the denoiser fitted otherwise
    (a fixed pool of pictures) 0.304 vs 0.255 on this data and 0.327 vs 0.231 on another draw. Scenes of
    two large subjects leave the layout prior strong (the average subject mask given to both scores
    0.265 here), hence the small margin asked."""
    result, _ = short_run
    assert result["iou"] > result["iou_layout_blind"] + 0.03, (result["iou"], result["iou_layout_blind"])


def test_short_training_routes_unseen_characters_by_who_is_who(short_run):
    """On the same held-out scenes the router's masks match the true instance masks far better with
    the right references than with each scene's references rotated among its subjects: the
    matching of a reference to its figure carries to unseen characters, it is not only figure and
    ground plus a layout. Measured 2026-12-02: 0.311 with the right references, 0.150 rotated
    (0.327 against 0.182 on another draw)."""
    result, _ = short_run
    assert result["iou"] > result["iou_references_rotated"] + 0.05, (result["iou"], result["iou_references_rotated"])


def rewrite_shard(tar_path, change):
    """Apply ``change(members: dict[str, bytes])`` to a shard's first split=train record (training
    reads no other) and fix its manifest's size and sha256."""
    manifest_path = tar_path.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    first = manifest["keys"][manifest["splits"].index("train")]
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    record = {m.name: data for m, data in members if m.name.split(".")[0] == first}
    change(record)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        written = set()
        for member, payload in members:
            if member.name.split(".")[0] == first:
                if member.name in record and member.name not in written:
                    info = tarfile.TarInfo(member.name)
                    info.size, info.mtime = len(record[member.name]), member.mtime
                    tar.addfile(info, io.BytesIO(record[member.name]))
                    written.add(member.name)
            else:
                tar.addfile(member, io.BytesIO(payload))
    raw = buffer.getvalue()
    tar_path.write_bytes(raw)
    manifest.update(bytes=len(raw), sha256=sha256(raw).hexdigest())
    manifest_path.write_text(json.dumps(manifest))


def test_bad_masks_are_rejects_with_their_reason_and_training_goes_on(data, tmp_path):
    router = tmp_path / "router"
    shutil.copytree(data / "router", router)
    tars = sorted(router.glob("shard-*.tar"))

    def drop_last_mask(record):
        key = next(iter(record)).split(".")[0]
        count = sum(1 for name in record if ".mask" in "." + name.split(".", 1)[1])
        del record[f"{key}.mask{count - 1}.png"]

    def overlap(record):
        key = next(iter(record)).split(".")[0]
        record[f"{key}.mask1.png"] = record[f"{key}.mask0.png"]

    rewrite_shard(tars[0], drop_last_mask)
    rewrite_shard(tars[1], overlap)
    config = tiny_router_config(data, "steps=12", "checkpoint_every=12", "validation_samples=0", "batch_size=4")
    result = run_train_router(config, str(router), tmp_path / "run", progress=False)
    assert result["step"] == 12 and all(np.isfinite(l["loss"]) for l in result["losses"])
    problems = json.loads((tmp_path / "run" / "ranks" / "rank-0.json").read_text())["problems"]
    reasons = " | ".join(problems)
    assert "missing member" in reasons and "mask" in reasons and "instance masks overlap" in reasons, reasons


def test_errors_before_any_work(data, tmp_path):
    with pytest.raises(ConfigError, match="train router reads router_sample shards"):
        run_train_router(tiny_router_config(data), str(data / "pairs"), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match=r"multiple of 16 for this UNet"):
        run_train_router(tiny_router_config(data, "resolution=[72, 96]"), str(data / "router"), tmp_path / "b")
    from train.models.tiny import build_tiny_base  # an SD-1.5-shaped base is not SDXL
    sd15 = build_tiny_base(tmp_path / "sd15")
    with pytest.raises(ConfigError, match="not an SDXL-family UNet"):
        run_train_router(tiny_router_config(data, f"base={sd15}"), str(data / "router"), tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")
