"""``pairforge status DIR``: how far a job is, read from its plan and manifests alone, so it works
on a running job, a finished one, or one that died; DIR is a path or a URL (s3://, gs://)."""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

from shards import storage
from shards.keys import shard_name
from shards.stage import reject_reason
from shards.writer import read_manifest


def _shard_dir(directory: str) -> str:
    pairs = storage.join(directory, "pairs")
    return pairs if storage.exists(storage.join(pairs, "plan.json")) else directory


def job_status(directory: str | Path) -> list[str]:
    root = _shard_dir(storage.absolute(directory))
    plan_path = storage.join(root, "plan.json")
    if not storage.exists(plan_path):
        raise FileNotFoundError(f"{directory}: no plan.json; is this the --out of a pairforge job?")
    plan = json.loads(storage.read_bytes(plan_path))
    done, stale, reasons = [], [], Counter()
    samples_done = rejected = 0
    for i in range(plan["shards"]):
        manifest = read_manifest(root, shard_name(i))
        if manifest is None:
            continue
        if manifest.get("config_hash") != plan["config_hash"]:
            stale.append(i)
            continue
        done.append(i)
        samples_done += manifest["count"]
        rejected += len(manifest["rejects"])
        reasons.update(reject_reason(r["error"]) for r in manifest["rejects"])
    unfinished = storage.glob(root, "*.tar.tmp")  # on object storage a shard is uploaded whole: none
    in_progress = sorted({storage.name(p).split(".")[0] for p in unfinished})
    total_samples = sum(plan["samples"])
    left = [i for i in range(plan["shards"]) if i not in set(done)]
    lines = [f"{root}: {len(done)}/{plan['shards']} shards complete "
             f"({samples_done + rejected}/{total_samples} samples: {samples_done} written, {rejected} rejected)"]
    if reasons:
        lines.append("  rejected by reason: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    if in_progress:
        newest = max(os.path.getmtime(p) for p in unfinished)
        lines.append(f"  being written (or left by a dead worker): {', '.join(in_progress)}; "
                     f"last write {time.time() - newest:.0f} s ago")
    if stale:
        lines.append(f"  {len(stale)} shards were written under another config and will be redone")
    if left:
        shown = ", ".join(shard_name(i) for i in left[:5]) + (" ..." if len(left) > 5 else "")
        lines.append(f"  left: {len(left)} shards, {sum(plan['samples'][i] for i in left)} samples ({shown})")
        lines.append("  re-run the same command to finish; complete shards are kept")
    else:
        lines.append("  complete")
    return lines
