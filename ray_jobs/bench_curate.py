"""``pairforge bench curate``: photos/s per core of the whole photo pipeline at 1024x1024 (one
decode at the working size, the checks, the person and face models, the hash, the mask) against
the naive pipeline measured in the same run (the same checks one image at a time, each decoding
the file again at full size), what bounds it; and the near-duplicate search over 10k, 100k and
1M synthetic 64-bit hashes with planted near-copies, its time against N log N."""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np


def _photos(folder: Path, count: int, side: int = 1024) -> list[Path]:
    """``count`` distinct 1024x1024 JPEGs of scikit-image's astronaut (shifted crops, mirrored)."""
    import skimage.data
    from PIL import Image

    from shards.encoding import encode_jpeg
    base = Image.fromarray(skimage.data.astronaut()).resize((side + 64, side + 64), Image.BICUBIC)
    paths = []
    for i in range(count):
        crop = base.crop((i % 8 * 8, i // 8 % 8 * 8, i % 8 * 8 + side, i // 8 % 8 * 8 + side))
        if i % 2:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        path = folder / f"photo-{i:04d}.jpg"
        path.write_bytes(encode_jpeg(np.asarray(crop), 90))
        paths.append(path)
    return paths


def _timed(call) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``call()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_photos(count: int = 24) -> dict:
    import cv2
    from threadpoolctl import threadpool_limits

    from curate.people import make_detector
    from curate.photos import PhotoChecks, curate_naively, decode
    from curate.stages import PhotoJobConfig, PhotoStage
    from shards.encoding import encode_png

    checks = PhotoChecks()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="pairforge-bench-curate-") as scratch, threadpool_limits(1):
        paths = _photos(Path(scratch), count)
        stage = PhotoStage(PhotoJobConfig(checks=checks))
        stage.setup()
        items = [{"__key__": f"p{i:07d}", "source": str(p)} for i, p in enumerate(paths)]
        stage.process_batch(items[:2])  # warm the models
        out = []
        wall, cpu = _timed(lambda: out.extend(stage.process_batch(items)))
        kept = sum(1 for r in out if r.get("status", "ok") == "ok")
        detector = make_detector(checks.detector)
        naive_wall, naive_cpu = _timed(lambda: [curate_naively(p.read_bytes, str(p), checks, detector) for p in paths])
        datas = [p.read_bytes() for p in paths]
        works = []
        decode_wall, _ = _timed(lambda: works.extend(decode(d, checks).work for d in datas))
        found = []
        model_wall, _ = _timed(lambda: found.extend(stage.detector.detect(w) for w in works))
        mask_wall, _ = _timed(lambda: [encode_png(np.asarray(cv2.resize(f.mask, (1024, 1024)))) for f in found])
        stage.teardown()
        detector.close()
    shares = {"decode at work size": decode_wall, "person+face models": model_wall, "mask upscale+PNG": mask_wall}
    bound = max(shares, key=shares.get)
    return {
        "photos": count, "resolution": [1024, 1024], "detector": checks.detector, "kept": kept,
        "photos_per_s": round(count / wall, 2), "photos_per_cpu_s": round(count / cpu, 2),
        "naive_photos_per_s": round(count / naive_wall, 2), "naive_photos_per_cpu_s": round(count / naive_cpu, 2),
        "ratio": round(naive_wall / wall, 2),
        "seconds_per_photo": {name: round(seconds / count, 4) for name, seconds in shares.items()},
        "bound": f"{bound} ({shares[bound] / wall:.0%} of the pipeline's time)",
    }


def bench_search(sizes=(10_000, 100_000, 1_000_000), radius: int = 5, planted: float = 0.01) -> dict:
    from curate.dedup import near_pairs
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
        copies = int(n * planted)
        source, target = np.arange(copies), n - 1 - np.arange(copies)
        flips = np.zeros(copies, np.uint64)
        for k in range(radius):  # up to ``radius`` random bits flipped per copy
            bit = rng.integers(0, 64, copies).astype(np.uint64)
            flips |= np.where(rng.random(copies) < 0.8, np.uint64(1) << bit, np.uint64(0))
        hashes[target] = hashes[source] ^ flips
        pairs = []
        seconds, _ = _timed(lambda: pairs.append(near_pairs(hashes, radius)))
        found = {tuple(p) for p in pairs[0].tolist()}
        recall = np.mean([(int(s), int(t)) in found for s, t in zip(source, target)])
        rows.append({"n": n, "seconds": round(seconds, 3), "pairs": len(found), "planted_found": round(float(recall), 4)})
    first, last = rows[0], rows[-1]
    nlogn = (last["n"] * math.log(last["n"])) / (first["n"] * math.log(first["n"]))
    return {"radius_bits": radius, "search": rows, "time_growth": round(last["seconds"] / first["seconds"], 1),
            "n_log_n_growth": round(nlogn, 1), "all_pairs_growth": round((last["n"] / first["n"]) ** 2, 1)}


def bench_curate(photos: int = 24) -> dict:
    figures = {"pipeline": bench_photos(photos), "near_duplicates": bench_search()}
    pipeline, search = figures["pipeline"], figures["near_duplicates"]
    print(f"photo pipeline at 1024x1024 ({pipeline['detector']}): {pipeline['photos_per_s']} photos/s on one core "
          f"({pipeline['photos_per_cpu_s']} per CPU-second) vs naive {pipeline['naive_photos_per_s']}: "
          f"x{pipeline['ratio']}; bound by {pipeline['bound']}")
    for row in search["search"]:
        print(f"near-duplicate search, {row['n']:>9,} hashes: {row['seconds']:.2f} s, {row['pairs']} pairs "
              f"({row['planted_found']:.0%} of the planted copies)")
    print(f"time x{search['time_growth']} from 10k to 1M; N log N predicts x{search['n_log_n_growth']}, "
          f"all pairs x{search['all_pairs_growth']}")
    return figures
