"""The training loader (train/data): every sample once per epoch across 2 ranks x 2 workers with
equal batch counts, exact mid-epoch resume, reproducible on-the-fly composites, corrupt shards
skipped and counted, wrong-kind datasets refused, weighted mixing, uint8 output normalised on the
device, real pairs, the Ray Data way in and Hugging Face datasets reading the same shards. Real
shards: the project's render (15 samples in 4 uneven shards) and its composite job."""
import itertools
import logging
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from train.data import (
    DatasetKindError,
    ShardLoader,
    ShardSet,
    ShardStream,
    decoder_for,
    plan_epoch,
    plan_resampled,
    to_model,
)

pytestmark = pytest.mark.slow
SIZE = (96, 128)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ray_jobs.config import load_config
    from ray_jobs.jobs import RunOptions, run_composite, run_render, run_router_scenes
    from render.compositing.scenes import SceneConfig
    from render.compositing.stage import CompositeJobConfig
    from render.config import RenderConfig

    out = tmp_path_factory.mktemp("loader")
    options = RunOptions(runner="local", progress=False)
    config = load_config(RenderConfig, "demo", ["characters.count=3", "poses_per_character=5",
                                                 "samples_per_shard=4", "resolution=[128, 192]"])
    assert run_render(config, out, options).done == 15
    run_composite(load_config(CompositeJobConfig, None, ["procedural_count=50"]), out, out / "composited", options)
    run_router_scenes(load_config(SceneConfig, None, ["procedural_count=50", "scenes=6", "scenes_per_shard=4"]),
                      out, out / "router", options)
    return out


def backgrounds():
    from render.compositing.backgrounds import ProceduralBackgrounds
    return ProceduralBackgrounds(50)


def stream(path, kind="synthetic_pair", rank=0, world_size=1, batch_size=2, **options):
    shards = ShardSet.load(path, kind=kind)
    return ShardStream(shards, decoder_for(kind, SIZE, **options), batch_size, rank, world_size, seed=3)


def test_two_ranks_two_workers_read_every_sample_once_with_equal_batches(data):
    shards = ShardSet.load(str(data / "pairs" / "shard-{000000..000003}.tar"), kind="synthetic_pair")
    assert shards.counts == [4, 4, 4, 3]
    everything = {key for s in shards.shards for key in s.keys}
    for epoch in (0, 1):
        seen, batches = [], []
        for rank in (0, 1):
            loader = ShardLoader(stream(data / "pairs", rank=rank, world_size=2), num_workers=2)
            loader.epoch = epoch
            got = list(loader)
            batches.append([len(b["__key__"]) for b in got])
            seen += [key for b in got for key in b["__key__"]]
            assert loader.epoch == epoch + 1
        plan = plan_epoch(shards.counts, seed=3, epoch=epoch, world_size=2, num_workers=2, batch_size=2)
        dropped = {shards.shards[s].keys[i] for s, i in plan.dropped}
        assert batches[0] == batches[1] == [2, 2, 2, 1]             # 7 samples per rank, the same batches
        assert len(seen) == len(set(seen)) == 14 and len(dropped) == 1  # once each; 15 mod 2 dropped, listed
        assert set(seen) | dropped == everything
        for b in got:
            assert b["image"].dtype.is_floating_point and b["image"].shape[1:] == (3, SIZE[1], SIZE[0])
            assert b["image"].min() >= -1 and b["image"].max() <= 1
            assert b["bg_mask"].shape[1:] == (1, SIZE[1], SIZE[0]) and 0 <= b["bg_mask"].min() <= b["bg_mask"].max() <= 1
            assert b["pose"].shape == b["std"].shape == b["image"].shape and b["keypoints"].shape[1:] == (18, 3)


def test_a_restored_loader_yields_exactly_the_remaining_batches(data):
    def loader():
        return ShardLoader(stream(data / "pairs", rank=1, world_size=2, backgrounds=backgrounds()), num_workers=2)

    full = loader()
    list(full)                       # epoch 0
    expected = list(full)            # epoch 1, uninterrupted
    first = loader()
    list(first)
    it = iter(first)
    head = [next(it) for _ in range(3)]
    state = first.state_dict()
    del it
    assert state["epoch"] == 1 and state["batches"] == 3 and state["consumed"] == {"0/0": 4, "0/1": 2, "1/0": 4, "1/1": 2}  # 3 batches of 2 per rank
    restored = loader()
    restored.load_state_dict(state)
    rest = list(restored)
    assert len(head) + len(rest) == len(expected) == 4 and restored.epoch == 2
    for a, b in zip(head + rest, expected):
        assert a["__key__"] == b["__key__"]
        for name in ("image", "bg_mask", "pose", "keypoints", "std"):
            assert a[name].equal(b[name]), name
    with pytest.raises(ValueError, match="num_workers"):
        ShardLoader(restored.stream, num_workers=3).load_state_dict(state)


def test_on_the_fly_composite_is_the_same_in_any_worker(data):
    one = stream(data / "pairs", backgrounds=backgrounds())
    four = stream(data / "pairs", rank=1, world_size=2, backgrounds=backgrounds())
    alone = {s["__key__"]: s for s in one.samples(epoch=2, num_workers=1)}
    for worker in (0, 1):
        for sample in four.samples(epoch=2, num_workers=2, worker=worker):
            assert sample["image"].tobytes() == alone[sample["__key__"]]["image"].tobytes()
            assert sample["bg_mask"].tobytes() == alone[sample["__key__"]]["bg_mask"].tobytes()
    other = {s["__key__"]: s for s in one.samples(epoch=3, num_workers=1)}
    assert any(other[k]["image"].tobytes() != alone[k]["image"].tobytes() for k in alone)  # a new draw per epoch


def test_a_corrupt_shard_is_skipped_logged_and_counted(data, tmp_path, caplog):
    pairs = tmp_path / "pairs"
    shutil.copytree(data / "pairs", pairs)
    bad = pairs / "shard-000001.tar"
    raw = bytearray(bad.read_bytes())
    raw[512 * 3: 512 * 3 + 64] = b"\xff" * 64  # inside a member's data or header; the size is unchanged
    raw[2048:4096] = bytes(2048)
    bad.write_bytes(bytes(raw))
    (pairs / "shard-000002.tar").write_bytes((pairs / "shard-000002.tar").read_bytes()[:3000])  # truncated
    caplog.set_level(logging.WARNING)
    s = stream(pairs, batch_size=2)
    assert [name for name, _ in s.source.skipped] == [str(pairs / "shard-000002.tar")]  # left out on load
    assert "shard-000002.tar" in caplog.text and len(s.source) == 11
    loader = ShardLoader(s, num_workers=0)
    batches = list(loader)
    keys = [k for b in batches for k in b["__key__"]]
    failed = Counter(f for b in batches for f in b["__failed__"] if f)
    assert len(batches) == loader.plan().batches == 6                  # ceil(11 / 2): as planned
    assert len(keys) == 11 and set(failed) == {str(bad)} and s.problems   # replaced, counted, never short
    assert "shard-000001.tar" in caplog.text


def test_a_dataset_of_another_kind_is_refused_naming_it(data):
    with pytest.raises(DatasetKindError, match="composited_pair.*expects synthetic_pair"):
        ShardSet.load(data / "composited", kind="synthetic_pair")
    with pytest.raises(NotImplementedError, match="no training decoder for 'captioned'"):
        decoder_for("captioned", SIZE)


def test_composited_pairs_decode_to_model_ready_tensors(data):
    loader = ShardLoader(stream(data / "composited", kind="composited_pair", batch_size=4), num_workers=0)
    batches = list(loader)
    assert [len(b["__key__"]) for b in batches] == [4, 4, 4, 3]
    batch = batches[0]
    assert batch["image"].shape == (4, 3, SIZE[1], SIZE[0]) and batch["image"].dtype.is_floating_point
    assert -1 <= batch["image"].min() < batch["image"].max() <= 1
    kp = batch["keypoints"][0].numpy()
    visible = kp[kp[:, 2] > 0]
    assert len(visible) and (visible[:, 0] < SIZE[0]).all() and (visible[:, 1] < SIZE[1]).all()
    pose = batch["pose"][0].numpy()
    assert (pose[:, visible[:, 1].astype(int), visible[:, 0].astype(int)] > -1).any(axis=0).all()  # drawn at the joints


def test_a_resampled_stream_is_endless_draws_with_replacement_and_resumes_exactly(data):
    def loader():
        shards = ShardSet.load(data / "pairs", kind="synthetic_pair")
        s = ShardStream(shards, decoder_for("synthetic_pair", SIZE), 3, rank=0, world_size=2, seed=9, resampled=True)
        return ShardLoader(s, num_workers=2)

    it = iter(loader())
    expected = [next(it) for _ in range(9)]   # 27 samples from 15: shards drawn again
    keys = [k for b in expected for k in b["__key__"]]
    assert len(keys) == 27 and len(set(keys)) < 27
    first = loader()
    it = iter(first)
    head = [next(it) for _ in range(4)]
    state = first.state_dict()
    assert state["batches"] == 4 and state["consumed"]["0/0"] == 6 and state["consumed"]["0/1"] == 6
    restored = loader()
    restored.load_state_dict(state)
    it = iter(restored)
    rest = [next(it) for _ in range(5)]
    for a, b in zip(head + rest, expected):
        assert a["__key__"] == b["__key__"] and a["image"].equal(b["image"])


def test_router_samples_decode_to_stacked_subjects_and_masks(data):
    s = stream(data / "router", kind="router_sample", batch_size=2)
    batches = list(ShardLoader(s, num_workers=0))
    assert sum(len(b["__key__"]) for b in batches) == 6
    batch = batches[0]
    assert batch["image"].shape == (2, 3, SIZE[1], SIZE[0]) and batch["subjects"].shape == (2, 4, 3, SIZE[1], SIZE[0])
    assert batch["masks"].shape == (2, 4, SIZE[1], SIZE[0]) and 0 <= batch["masks"].min() <= batch["masks"].max() <= 1
    for valid, masks in zip(batch["subject_valid"], batch["masks"]):
        count = int(valid.sum())
        assert 2 <= count <= 4 and (masks[:count].flatten(1).amax(1) == 1).all() and not masks[count:].any()
    assert all(isinstance(c, str) and c for c in batch["caption"])


def test_multiview_records_decode_to_views_and_cameras(tmp_path):
    import io
    import json

    from PIL import Image

    from shards.schema import MULTIVIEW
    from shards.writer import ShardWriter

    def png(i):
        rgba = np.zeros((64, 48, 4), np.uint8)
        rgba[10:50, 10:40] = (200, 30 * i, 40, 255)
        buf = io.BytesIO()
        Image.fromarray(rgba).save(buf, "PNG")
        return buf.getvalue()

    with ShardWriter(tmp_path, "shard-000000", MULTIVIEW, "test") as writer:
        for n, key in ((3, "o0001"), (2, "o0002")):
            views = [{"camera": {"pose": np.eye(4).tolist(), "focal_px": 100.0}} for _ in range(n)]
            meta = {"schema": MULTIVIEW.tag, "object_id": key, "views": views, "renderer": {"name": "test"},
                    "seed": 0, "split": "train"}
            writer.write({"__key__": key, "json": json.dumps(meta).encode(), **{f"view{i}.png": png(i) for i in range(n)}})
    s = ShardStream(ShardSet.load(tmp_path, kind="multiview"), decoder_for("multiview", SIZE, views=3), 2)
    (batch,) = list(ShardLoader(s))
    assert batch["views"].shape == (2, 3, 3, SIZE[1], SIZE[0]) and batch["cameras"].shape == (2, 3, 4, 4)
    assert batch["view_valid"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["focal"][0, 0].item() == pytest.approx(100.0 * 2)  # 48x64 fitted into 96x128
    assert not batch["views"][1, 2].any() and batch["views"][0, 0].min() >= -1


def test_batches_come_in_plan_order_when_workers_hold_unequal_batch_counts(data):
    def loader():
        return ShardLoader(stream(data / "pairs", batch_size=2), num_workers=3)  # 8 batches: 3, 3, 2 per worker

    full = loader()
    plan = full.plan()
    keys = [b["__key__"] for b in full]
    shards = full.stream.source.shards
    assert keys == [[shards[s].keys[i] for s, i in plan.batch_items(0, j)] for j in range(8)]
    assert [len(k) for k in keys] == [2] * 7 + [1]
    resumed = loader()
    resumed.load_state_dict({**full.state_dict(), "epoch": 0, "batches": 4})  # restored workers hold 2, 1, 1
    assert [b["__key__"] for b in resumed] == keys[4:]


def test_mixed_datasets_are_drawn_by_their_weights(data):
    a = ShardSet.load(str(data / "pairs" / "shard-00000{0,1}.tar"), kind="synthetic_pair")  # 8 samples
    b = ShardSet.load(str(data / "pairs" / "shard-00000{2,3}.tar"), kind="synthetic_pair")  # 7 samples
    mixed = ShardSet.mix([(a, 3.0), (b, 1.0)])
    assert len(mixed) == 15 and mixed.kind == "synthetic_pair"
    plan = plan_resampled(mixed.counts, seed=1, world_size=2, num_workers=2, weights=mixed.weights)
    read = []
    for rank in (0, 1):
        items = list(itertools.islice(plan.stream_items(rank=rank, worker=1), 20_000))
        share_a = sum(shard < 2 for shard, _ in items) / len(items)
        assert share_a == pytest.approx(0.75, abs=0.02)  # samples, not shards, in the ratio 3 : 1 on each rank
        read.append({shard for shard, _ in items})
    assert read[0].isdisjoint(read[1]) and len(read[0]) == len(read[1]) == 2  # each rank its own shard of each
    s = ShardStream(mixed, decoder_for("synthetic_pair", SIZE), 2, seed=1, resampled=True)
    keys = [sample["__key__"] for sample in itertools.islice(s.samples(0), 12)]
    assert set(keys) <= {k for shard in mixed.shards for k in shard.keys}
    with pytest.raises(ValueError, match="resampled=True"):
        ShardStream(mixed, decoder_for("synthetic_pair", SIZE), 2)
    with pytest.raises(DatasetKindError, match="different record kinds"):
        ShardSet.mix([(a, 1.0), (ShardSet.load(data / "composited", kind="composited_pair"), 1.0)])


def test_uint8_samples_normalised_on_the_device_equal_the_float_samples(data):
    floats = stream(data / "pairs", backgrounds=backgrounds())
    raw = ShardStream(floats.source, decoder_for("synthetic_pair", SIZE, backgrounds=backgrounds(), normalize=False),
                      2, seed=3)
    (expected,), (compact,) = list(ShardLoader(floats))[:1], list(ShardLoader(raw))[:1]
    assert compact["image"].dtype == compact["bg_mask"].dtype == compact["std"].dtype == torch.uint8
    assert compact["image"].nbytes * 4 == expected["image"].nbytes
    moved = to_model(compact)
    for name in ("image", "bg_mask", "pose", "std", "keypoints"):
        assert moved[name].dtype == torch.float32 and torch.allclose(moved[name], expected[name], atol=1e-6), name


def test_real_pairs_decode_to_reference_target_and_caption(tmp_path):
    import json

    from shards.encoding import encode_jpeg, encode_png
    from shards.schema import REAL_PAIR
    from shards.writer import ShardWriter

    photo = np.full((300, 200, 3), 90, np.uint8)
    reference = np.full((192, 128, 3), 255, np.uint8)
    reference[40:150, 40:90] = (200, 60, 60)
    with ShardWriter(tmp_path, "shard-000000", REAL_PAIR, "test") as writer:
        for i in range(3):
            meta = {"schema": REAL_PAIR.tag, "photo_id": f"p{i}", "split": "train"}
            writer.write({"__key__": f"p{i}", "ref.png": encode_png(reference), "target.jpg": encode_jpeg(photo),
                          "txt": f"a person {i}".encode(), "json": json.dumps(meta).encode()})
    s = ShardStream(ShardSet.load(tmp_path, kind="real_pair"), decoder_for("real_pair", SIZE, ref_size=(64, 96)), 3)
    (batch,) = list(ShardLoader(s))
    assert batch["ref"].shape == (3, 3, 96, 64) and batch["target"].shape == (3, 3, SIZE[1], SIZE[0])
    assert batch["caption"] == ["a person 0", "a person 1", "a person 2"]
    assert batch["original_size"][0].tolist() == [300, 200]
    assert batch["ref"][0, 0, 48, 32] > 0.5 > batch["ref"][0, 1, 48, 32]  # the red figure, fitted


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_ray_data_gives_the_same_samples_as_the_dataloader(data, ray_shut_down_after):
    import ray

    from train.data.ray_data import collate_fn, ray_dataset

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    shards = ShardSet.load(data / "pairs", kind="synthetic_pair")
    decoder = decoder_for("synthetic_pair", SIZE, backgrounds=backgrounds(), seed=5)
    loader = ShardLoader(ShardStream(shards, decoder, 4, seed=3), num_workers=0)
    loader.epoch = 2
    expected = {key: (b["image"][i], b["pose"][i], b["std"][i]) for b in loader for i, key in enumerate(b["__key__"])}
    got = {}
    for batch in ray_dataset(shards, decoder, epoch=2).iter_torch_batches(batch_size=4, collate_fn=collate_fn()):
        assert batch["image"].dtype == torch.float32 and isinstance(batch["__key__"], list)
        got.update({key: (batch["image"][i], batch["pose"][i], batch["std"][i]) for i, key in enumerate(batch["__key__"])})
    assert sorted(got) == sorted(expected) and len(got) == 15
    for key, tensors in got.items():
        assert all(a.equal(b) for a, b in zip(tensors, expected[key])), key


def test_shards_open_in_hugging_face_datasets(data, monkeypatch, tmp_path):
    import datasets

    from shards.reader import iter_dataset

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = sorted(str(p) for p in (data / "pairs").glob("*.tar"))
    hf = datasets.load_dataset("webdataset", data_files={"train": paths}, split="train", streaming=True)
    ours = {r["__key__"]: r for r in iter_dataset(data / "pairs")}
    seen = 0
    for record in hf:
        mine = ours[record["__key__"]]
        assert np.array_equal(np.asarray(record["src.png"]), mine["src.png"]) and record["src.png"].mode == "RGBA"
        assert np.array_equal(np.asarray(record["std.png"]), mine["std.png"])
        assert record["json"]["character_id"] == mine["json"]["character_id"]
        seen += 1
    assert seen == len(ours) == 15


def test_a_dataset_on_s3_streams_the_same_batches_as_on_disk(data, s3):
    from shards import storage

    for tar in sorted((data / "pairs").glob("shard-*")):
        storage.put_file(tar, f"{s3}/pairs/{tar.name}")
    remote = ShardSet.load(f"{s3}/pairs/shard-{{000000..000003}}.tar", kind="synthetic_pair")
    assert remote.counts == [4, 4, 4, 3] and remote.shards[0].path == f"{s3}/pairs/shard-000000.tar"
    assert ShardSet.load(f"{s3}/pairs", kind="synthetic_pair").counts == remote.counts  # a folder, as on disk
    on_s3 = list(ShardLoader(ShardStream(remote, decoder_for("synthetic_pair", SIZE), 4, seed=3), num_workers=2))
    on_disk = list(ShardLoader(stream(data / "pairs", batch_size=4), num_workers=2))
    assert [b["__key__"] for b in on_s3] == [b["__key__"] for b in on_disk]
    assert all(a["image"].equal(b["image"]) and a["std"].equal(b["std"]) for a, b in zip(on_s3, on_disk))
    with pytest.raises(FileNotFoundError, match="no shards"):
        ShardSet.load(f"{s3}/missing", kind="synthetic_pair")


def test_one_split_is_read_from_the_manifests_alone(data):
    from shards.reader import iter_dataset

    truth = {r["__key__"]: r["json"]["split"] for r in iter_dataset(data / "pairs")}
    assert set(truth.values()) == {"train", "test"}  # the fixture's characters fall in both
    for split in ("train", "test"):
        shards = ShardSet.load(data / "pairs", kind="synthetic_pair", split=split)
        s = ShardStream(shards, decoder_for("synthetic_pair", SIZE), 2, seed=3)
        keys = [k for b in ShardLoader(s, num_workers=2) for k in b["__key__"]]
        assert sorted(keys) == sorted(k for k, v in truth.items() if v == split)
    with pytest.raises(ValueError, match="choose train, test"):
        ShardSet.load(data / "pairs", kind="synthetic_pair", split="val")
