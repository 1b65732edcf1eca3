"""Runs a small render job on Ray with faults injected by sample key (run as a script by the
tests, so Ray ships these stage classes to its workers by value)."""
import argparse
import os
import time
from pathlib import Path

from ray_jobs.config import config_hash, load_config
from ray_jobs.jobs import character_files
from ray_jobs.ray_runner import run_ray
from ray_jobs.shardwork import ShardJob, plan_shards
from render.config import RenderConfig
from render.stage import RenderStage, plan_items

SMALL = ["characters.count=3", "poses_per_character=4", "samples_per_shard=4", "resolution=[128, 192]"]


class FaultyStage(RenderStage):
    def __init__(self, config, kill: str, fail: str, hang: str, marker: str):
        super().__init__(config)
        self.kill, self.fail, self.hang, self.marker = kill, fail, hang, Path(marker)

    def process_batch(self, items):
        keys = {item["__key__"] for item in items}
        if self.kill in keys and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-shard, once
        if self.fail in keys:
            raise ValueError(f"injected failure in {self.fail}")
        if self.hang in keys:
            time.sleep(3600)
        return super().process_batch(items)

    def teardown(self):
        super().teardown()
        (self.marker.parent / f"teardown-{os.getpid()}.marker").touch()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--kill", default="")
    parser.add_argument("--fail", default="")
    parser.add_argument("--hang", default="")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    config = load_config(RenderConfig, "demo", SMALL)
    out = Path(args.out)
    shards = plan_shards(plan_items(config, character_files(config, out)), config.samples_per_shard)
    stage = FaultyStage(config, args.kill, args.fail, args.hang, str(out / "killed.marker"))
    job = ShardJob(str(out / "pairs"), config_hash(config), {})
    summary = run_ray(stage.with_(sample_timeout=args.timeout), shards, job, progress=False, workers=1)
    print("\n".join(summary.lines()))


if __name__ == "__main__":
    main()
