"""The render job's configuration: plain frozen dataclasses with defaults, filled from YAML by
ray_jobs.config. Everything that changes records lives here, so its hash identifies a dataset."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from render.backends.settings import BACKENDS, BlenderSettings
from render.spec import SamplingRanges, StandardView


@dataclass(frozen=True)
class CharactersConfig:
    source: str = "procedural"   # "procedural" (capsule figures), "human" (MakeHuman bodies) or a folder of .glb
    count: int = 8               # characters to generate
    seed: int = 0


@dataclass(frozen=True)
class RenderConfig:
    seed: int = 0
    characters: CharactersConfig = field(default_factory=CharactersConfig)
    pose_count: int = 64           # distinct pose ids; pose i is the same pose on every character
    pose_table: str = ""           # a pose table (pairforge poses); if set, pose ids index it instead
    poses_per_character: int = 16  # a seeded subset of the pose ids per character
    views_per_pose: int = 1
    resolution: tuple[int, int] = (512, 768)
    backend: str = "pyrender"      # or "blender" (see the blender section)
    blender: BlenderSettings = field(default_factory=BlenderSettings)
    scene: SamplingRanges = field(default_factory=SamplingRanges)
    standard: StandardView = field(default_factory=StandardView)
    samples_per_shard: int = 64
    batch_size: int = 16
    test_fraction: float = 0.2
    png_compress_level: int = 1

    def content_files(self) -> list[str]:
        """Files whose contents shape the records, so their digests belong in the config hash."""
        return [self.pose_table] if self.pose_table else []

    def pose_total(self) -> int:
        """How many pose ids there are: the pose table's rows, or pose_count."""
        if self.pose_table:
            from render.motions import read_pose_table
            return len(read_pose_table(self.pose_table))
        return self.pose_count

    def check(self) -> None:
        """Raise ValueError naming the setting to change when values cannot work."""
        w, h = self.resolution
        problems = []
        if not (16 <= w <= 8192 and 16 <= h <= 8192):
            problems.append(f"resolution {w}x{h}: each side must be 16..8192")
        if self.pose_table and not Path(self.pose_table).is_file():
            problems.append(f"pose_table {self.pose_table}: no such file (make one with `pairforge poses`)")
        elif self.poses_per_character > self.pose_total():
            problems.append(f"poses_per_character ({self.poses_per_character}) > the {self.pose_total()} poses "
                            f"{'in pose_table' if self.pose_table else 'of pose_count'}")
        for name in ("pose_count", "poses_per_character", "views_per_pose", "samples_per_shard", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if not 0 <= self.test_fraction <= 1:
            problems.append("test_fraction must be within 0..1")
        if not 0 <= self.png_compress_level <= 9:
            problems.append("png_compress_level must be 0..9")
        if self.backend not in BACKENDS:
            problems.append(f"backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        problems += self.blender.check()
        if problems:
            raise ValueError("; ".join(problems))
