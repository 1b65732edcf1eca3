"""Captions: the metadata captioner for renders (no model), Qwen2-VL / Qwen2.5-VL on transformers
or vLLM, a cache keyed by image bytes, model and prompt, and the caption stage that ``pairforge
caption`` and the demo run (docs/architecture.md, "Captions")."""
