"""The names and settings that both sides of the renderer agree on (the render config, the
backends, the Blender worker in its own process): a leaf module that imports nothing of ours, so
config, backends and worker can all read it without an import cycle."""
from __future__ import annotations

from dataclasses import dataclass

# "fake" is a GL-free numpy rasterizer (render.backends.fake_backend) for tests and CI of stages and
# runners: one flat colour per triangle, no lights, no anti-aliasing. Not for datasets.
BACKENDS = ("pyrender", "blender", "fake")
ENGINES = ("CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH")
WORKBENCH = {"light": "STUDIO", "color_type": "TEXTURE", "render_aa": "8"}  # preview shading
CHARACTER_SUFFIXES = (".glb", ".gltf", ".vrm", ".fbx", ".blend")            # what Blender imports as a character
OBJECT_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".fbx", ".blend")  # ... and as a multi-view object


@dataclass(frozen=True)
class BlenderSettings:
    """How the blender backend renders (the ``blender`` section of a render config)."""
    engine: str = "CYCLES"                # CYCLES, BLENDER_EEVEE (GPU machines) or BLENDER_WORKBENCH (previews)
    samples: int = 16                     # Cycles samples per pixel / EEVEE TAA samples
    denoiser: str = "OPENIMAGEDENOISE"    # Cycles denoiser, or NONE
    denoising_prefilter: str = "FAST"
    device: str = "auto"                  # auto (GPU when Cycles finds one), cpu or gpu
    timeout_s: float = 300.0              # per request to the Blender worker; then it is replaced
    tries: int = 2                        # worker failures on one character before it is rejected
    recycle_after: int = 50               # characters per worker process before a fresh one

    @property
    def gpus_per_worker(self) -> float:
        """What a render worker asks the cluster for: its own GPU when the config says gpu
        ("auto" renders on whatever GPU Cycles finds, and asks for none)."""
        return 1.0 if self.device == "gpu" else 0.0

    def check(self) -> list[str]:
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"blender.engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if self.denoiser not in ("OPENIMAGEDENOISE", "OPTIX", "NONE"):
            problems.append(f"blender.denoiser {self.denoiser!r}: use OPENIMAGEDENOISE, OPTIX or NONE")
        if self.denoising_prefilter not in ("FAST", "ACCURATE", "NONE"):
            problems.append(f"blender.denoising_prefilter {self.denoising_prefilter!r}: use FAST, ACCURATE or NONE")
        if self.device not in ("auto", "cpu", "gpu"):
            problems.append(f"blender.device {self.device!r}: use auto, cpu or gpu")
        for name in ("samples", "tries", "recycle_after"):
            if getattr(self, name) < 1:
                problems.append(f"blender.{name} must be >= 1")
        if self.timeout_s <= 0:
            problems.append("blender.timeout_s must be > 0")
        return problems
