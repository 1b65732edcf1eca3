"""``pairforge bench loader``: training samples per second per worker core, for every record kind
at the training size, with the plain webdataset pipeline over the same shards as the baseline.

One process, one thread (OpenCV and BLAS held to one), timed in CPU seconds, so each figure is
what one DataLoader worker on one core delivers; a training node runs one such worker per core it
gives to data.
The data: a real render (pyrender) of a few characters at the training size, its offline
composites and router scenes from the real jobs; multiview and real_pair records are assembled
from those renders (no Blender, no standardizer needed), and the backgrounds of the on-the-fly
compositing are a folder of JPEGs twice the frame's size, read anew for each sample (a real set,
9,186 images in the paper, is far larger than any cache), as a downloaded background set is."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _rate(samples, limit: int) -> float:
    """Samples per CPU-second of this process over the first ``limit`` of an iterator (the first
    one not timed). Everything runs on one thread, so that is the rate of one core, and other
    load on the machine, which stretches wall time, does not bend it."""
    iterator = iter(samples)
    next(iterator)
    count, started = 0, time.process_time()
    for _ in iterator:
        count += 1
        if count >= limit:
            break
    return count / (time.process_time() - started)


def _best_rate(make, limit: int, repeats: int = 3) -> float:
    """The best of ``repeats`` passes (the machine's other load only ever slows a pass down)."""
    return max(_rate(make(), limit) for _ in range(repeats))


def _write_backgrounds(folder: Path, count: int, size: tuple[int, int]) -> None:
    from render.compositing.backgrounds import procedural_background
    from shards.encoding import encode_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"bg{i:04d}.jpg").write_bytes(encode_jpeg(procedural_background(i, size), 90))


def _write_assembled(pairs_dir: Path, out: Path) -> None:
    """multiview and real_pair shards built from the render's images: 7 views of each character
    (its source renders), and (standardized render, a JPEG of a source on grey) as a real pair."""
    from shards.encoding import encode_jpeg, encode_png
    from shards.reader import iter_dataset
    from shards.schema import MULTIVIEW, REAL_PAIR
    from shards.writer import ShardWriter
    from train.data.kinds import on_white

    by_character: dict[str, list[dict]] = {}
    for record in iter_dataset(pairs_dir):
        by_character.setdefault(record["json"]["character_id"], []).append(record)
    with ShardWriter(out / "multiview", "shard-000000", MULTIVIEW, "bench") as views, \
            ShardWriter(out / "real", "shard-000000", REAL_PAIR, "bench") as real:
        for character, records in sorted(by_character.items()):
            cameras = [{"camera": {"pose": np.eye(4).tolist(), "focal_px": 900.0}} for _ in records[:7]]
            meta = {"schema": MULTIVIEW.tag, "object_id": character, "views": cameras, "renderer": {"name": "bench"},
                    "seed": 0, "split": "train"}
            views.write({"__key__": character, "json": json.dumps(meta).encode(),
                         **{f"view{i}.png": encode_png(r["src.png"]) for i, r in enumerate(records[:7])}})
            for record in records:
                meta = {"schema": REAL_PAIR.tag, "photo_id": record["__key__"], "split": "train"}
                real.write({"__key__": record["__key__"], "ref.png": encode_png(record["std.png"]),
                            "target.jpg": encode_jpeg(on_white(record["src.png"]), 95),
                            "txt": b"a person standing", "json": json.dumps(meta).encode()})


def bench_loader(characters: int = 4, poses: int = 16, resolution=(512, 768), samples: int = 64) -> dict:
    import cv2
    import webdataset as wds
    from threadpoolctl import threadpool_limits

    from ray_jobs.config import load_config
    from ray_jobs.jobs import RunOptions, run_composite, run_render, run_router_scenes
    from render.compositing.backgrounds import FolderBackgrounds
    from render.compositing.scenes import SceneConfig
    from render.compositing.stage import CompositeJobConfig
    from render.config import RenderConfig
    from shards.reader import safe_webdataset
    from train.data import ShardSet, ShardStream, decoder_for

    size = tuple(resolution)
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-loader-") as tmp:
        tmp = Path(tmp)
        options = RunOptions(runner="local", progress=False)
        config = load_config(RenderConfig, "demo", [f"characters.count={characters}", f"poses_per_character={poses}",
                                                    f"resolution=[{size[0]}, {size[1]}]", "samples_per_shard=16"])
        run_render(config, tmp, options)
        run_composite(load_config(CompositeJobConfig, None, []), tmp, tmp / "composited", options)
        run_router_scenes(load_config(SceneConfig, None, ["scenes=16"]), tmp, tmp / "router", options)
        _write_assembled(tmp / "pairs", tmp)
        _write_backgrounds(tmp / "backgrounds", 16, (size[0] * 2, size[1] * 2))
        backgrounds = FolderBackgrounds(tmp / "backgrounds", cache_size=0)
        urls = sorted(str(p) for p in (tmp / "pairs").glob("*.tar"))

        def stream(folder, kind, **decoder_options):
            shards = ShardSet.load(tmp / folder, kind=kind)
            return lambda: ShardStream(shards, decoder_for(kind, size, **decoder_options), 8).samples(0)

        kinds = {
            "synthetic_pair": stream("pairs", "synthetic_pair", backgrounds=backgrounds),
            "synthetic_pair_uint8": stream("pairs", "synthetic_pair", backgrounds=backgrounds, normalize=False),
            "synthetic_pair_on_white": stream("pairs", "synthetic_pair"),
            "composited_pair": stream("composited", "composited_pair"),
            "router_sample": stream("router", "router_sample"),
            "multiview": stream("multiview", "multiview", views=7),
            "real_pair": stream("real", "real_pair"),
        }
        cv2.setNumThreads(1)
        with threadpool_limits(1):
            rates = {name: _best_rate(make, samples) for name, make in kinds.items()}
            plain = _best_rate(lambda: wds.WebDataset(urls, shardshuffle=False).decode("rgb"), samples)
            plain_uint8 = _best_rate(lambda: wds.WebDataset(urls, shardshuffle=False).decode("rgb8"), samples)
            safe = _best_rate(lambda: safe_webdataset(urls), samples)
    decode = 1 / safe  # seconds per sample of reading and decoding alone
    return {"benchmark": "loader", "resolution": list(size), "threads": 1, "samples_per_pass": samples,
            "samples_per_s_per_core": {name: round(rate, 1) for name, rate in rates.items()},
            "baseline_plain_webdataset_rgb_per_s": round(plain, 1),
            "plain_webdataset_rgb8_per_s": round(plain_uint8, 1),
            "safe_reader_per_s": round(safe, 1),
            "safe_reader_vs_plain_rgb": round(safe / plain, 2),
            "safe_reader_vs_plain_rgb8": round(safe / plain_uint8, 2),
            "synthetic_pair_vs_plain_rgb": round(rates["synthetic_pair"] / plain, 2),
            "synthetic_pair_uint8_vs_plain_rgb": round(rates["synthetic_pair_uint8"] / plain, 2),
            "synthetic_pair_ms": {"read_and_decode_pngs": round(decode * 1e3, 2),
                                  "background_composite_pose_and_tensors":
                                      round((1 / rates["synthetic_pair"] - decode) * 1e3, 2)}}
