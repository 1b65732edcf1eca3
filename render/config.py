"""The render job's configuration: plain frozen dataclasses with defaults, filled from YAML by
ray_jobs.config. Everything that changes records lives here, so its hash identifies a dataset."""
from __future__ import annotations

from dataclasses import dataclass, field

from render.spec import SamplingRanges, StandardView


@dataclass(frozen=True)
class CharactersConfig:
    source: str = "procedural"   # "procedural" or a directory of .glb characters
    count: int = 8               # procedural characters to generate
    seed: int = 0


@dataclass(frozen=True)
class RenderConfig:
    seed: int = 0
    characters: CharactersConfig = field(default_factory=CharactersConfig)
    pose_count: int = 64           # distinct pose ids; pose i is the same pose on every character
    poses_per_character: int = 16  # a seeded subset of the pose ids per character
    views_per_pose: int = 1
    resolution: tuple[int, int] = (512, 768)
    backend: str = "pyrender"
    scene: SamplingRanges = field(default_factory=SamplingRanges)
    standard: StandardView = field(default_factory=StandardView)
    samples_per_shard: int = 64
    batch_size: int = 16
    test_fraction: float = 0.2
    png_compress_level: int = 1

    def check(self) -> None:
        """Raise ValueError naming the setting to change when values cannot work."""
        w, h = self.resolution
        problems = []
        if not (16 <= w <= 8192 and 16 <= h <= 8192):
            problems.append(f"resolution {w}x{h}: each side must be 16..8192")
        if self.poses_per_character > self.pose_count:
            problems.append(f"poses_per_character ({self.poses_per_character}) > pose_count ({self.pose_count})")
        for name in ("pose_count", "poses_per_character", "views_per_pose", "samples_per_shard", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if not 0 <= self.test_fraction <= 1:
            problems.append("test_fraction must be within 0..1")
        if not 0 <= self.png_compress_level <= 9:
            problems.append("png_compress_level must be 0..9")
        if problems:
            raise ValueError("; ".join(problems))
