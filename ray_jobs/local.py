"""The in-process runner: plan -> numbered shards -> stage batches -> atomic shard writes.
The shard is the unit of progress and resume: a shard whose manifest exists and was written
under the same config hash is skipped."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from shards.keys import shard_name
from shards.schema import Schema
from shards.stage import Stage
from shards.writer import ShardWriter, read_manifest, shard_is_complete


@dataclass
class RunSummary:
    out_dir: str
    shards_total: int = 0
    shards_skipped: int = 0
    done: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, manifest: dict) -> None:
        """Count a finished shard from its manifest."""
        self.done += manifest["count"]
        self.rejected += len(manifest["rejects"])
        self.reasons.update(r["error"] for r in manifest["rejects"])

    def lines(self) -> list[str]:
        rate = self.done / self.seconds if self.seconds else 0.0
        out = [f"done: {self.done} samples in {self.shards_total} shards "
               f"({self.shards_skipped} already complete, skipped); {rate:.1f} samples/s over {self.seconds:.1f} s",
               f"rejected: {self.rejected}"]
        out += [f"  {n} x {reason}" for reason, n in self.reasons.most_common()]
        out.append(f"shards: {self.out_dir}")
        return out


def plan_shards(items: list[dict], per_shard: int) -> list[list[dict]]:
    return [items[i:i + per_shard] for i in range(0, len(items), per_shard)]


def check_output_dir(out_dir: Path, config_hash: str) -> None:
    """Refuse to mix shards of another config into ``out_dir`` (before any work is done)."""
    for manifest_file in sorted(Path(out_dir).glob("*.json")):
        manifest = read_manifest(out_dir, manifest_file.stem)
        if manifest and "config_hash" in manifest and manifest["config_hash"] != config_hash:
            raise RuntimeError(f"{out_dir} holds shards written with another config (hash {manifest['config_hash']}, "
                               f"now {config_hash}); use a new --out directory or remove the old shards")


def run_local(stage: Stage, shards: list[list[dict]], out_dir: str | Path, schema: Schema, config_hash: str,
              versions: dict[str, str], batch_size: int = 16, progress: bool = True) -> RunSummary:
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_output_dir(out_dir, config_hash)
    summary = RunSummary(str(out_dir), shards_total=len(shards))
    todo = [i for i in range(len(shards)) if not shard_is_complete(out_dir, shard_name(i), config_hash)]
    summary.shards_skipped = len(shards) - len(todo)
    for i in sorted(set(range(len(shards))) - set(todo)):
        summary.add(read_manifest(out_dir, shard_name(i)))
    bar = tqdm(total=sum(len(shards[i]) for i in todo), unit="sample", disable=not progress, desc=stage.name)
    started = time.perf_counter()
    stage.setup()
    try:
        for i in todo:
            with ShardWriter(out_dir, shard_name(i), schema, config_hash, versions) as writer:
                for start in range(0, len(shards[i]), batch_size):
                    batch = shards[i][start:start + batch_size]
                    for record in stage.process_batch(batch):
                        writer.write(record)
                    bar.update(len(batch))
            summary.add(writer.manifest)
            bar.set_postfix(shards=f"{i + 1}/{len(shards)}", rejected=summary.rejected)
    finally:
        stage.teardown()
        bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
