"""The caption job's config (``pairforge caption``, ``--set key=value``): which captioner, the
model and how it runs, the prompts per record kind, generation settings, and where the output
and the cache go."""
from __future__ import annotations

from dataclasses import dataclass, field

BACKENDS = ("auto", "metadata", "transformers", "vllm")
OUTPUTS = ("inline", "sidecar")
DTYPES = ("auto", "float32", "bfloat16", "float16")
PATCH = 28  # Qwen2-VL's image grid: 14 px patches merged 2 x 2


@dataclass(frozen=True)
class Prompts:
    """The instruction sent with each image, by what the record shows."""
    synthetic_character: str = ("Describe this rendered character in one sentence: body, hair, clothing and its "
                                "colours, pose, facial expression, and the background.")
    real_photo: str = ("Describe this photo in one sentence: the person's appearance, clothing, pose and "
                       "expression, and the setting.")
    multi_subject_scene: str = ("Describe this scene in one or two sentences: how many characters there are, "
                                "each one from left to right (clothing, pose), and the background.")
    multi_view_object: str = "Describe this object in one sentence: what it is, its shape, colours and material."


@dataclass(frozen=True)
class Generation:
    """Greedy decoding (deterministic, so a cached caption is the one a re-run would write)."""
    max_new_tokens: int = 96
    repetition_penalty: float = 1.05  # Qwen2-VL's own generation default


@dataclass(frozen=True)
class VllmSettings:
    gpu_memory_utilization: float = 0.85
    max_model_len: int = 4096


@dataclass(frozen=True)
class CaptionConfig:
    backend: str = "auto"       # auto: transformers when a model is given, else metadata (no download)
    model: str = ""             # a hub id (Qwen/Qwen2-VL-2B-Instruct) or a local folder
    revision: str = "main"      # hub revision (branch, tag or commit) of a hub id
    dtype: str = "auto"         # auto: bfloat16 on a GPU, float32 on the CPU
    device: str = "auto"        # auto: cuda when torch sees one, else cpu
    batch_size: int = 8
    # The image's pixel budget after resizing (multiples of 28 x 28): capped, because resizing and
    # patching large photos on the GPU worker's CPU would starve its GPU, and tokens cost time.
    min_pixels: int = 64 * PATCH * PATCH
    max_pixels: int = 512 * PATCH * PATCH
    gpus: float = 0.0           # GPUs per worker; Ray sizes the pool by them (1 on a GPU cluster)
    cpus: float = 1.0           # CPUs per worker: the threads that decode and resize images
    memory_mb: int = 8000
    sample_timeout: float = 300.0
    output: str = "inline"      # inline: the records with txt added; sidecar: caption shards keyed alike
    cache: str = ""             # folder (or URL) of cached captions; "" -> OUT/caption_cache; "none": no cache
    characters: str = ""        # .glb folder for metadata captions' clothing; "" -> the input job's characters/
    prompts: Prompts = field(default_factory=Prompts)
    generation: Generation = field(default_factory=Generation)
    vllm: VllmSettings = field(default_factory=VllmSettings)

    @property
    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "transformers" if self.model else "metadata"

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output {self.output!r}: use inline or sidecar")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.resolved_backend in ("transformers", "vllm") and not self.model:
            raise ValueError(f"backend {self.resolved_backend} needs a model: --model Qwen/Qwen2-VL-2B-Instruct "
                             f"or a local folder (or --backend metadata)")
        if self.batch_size < 1 or self.generation.max_new_tokens < 1 or self.cpus <= 0 or self.gpus < 0:
            raise ValueError("batch_size and generation.max_new_tokens must be >= 1, cpus > 0 and gpus >= 0")
        if not PATCH * PATCH <= self.min_pixels <= self.max_pixels:
            raise ValueError(f"need {PATCH * PATCH} <= min_pixels <= max_pixels "
                             f"(got {self.min_pixels} and {self.max_pixels})")
