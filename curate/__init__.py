"""Checks on characters and photos (pure functions returning a verdict with a reason),
de-duplication and captioners (metadata template, Qwen2-VL). Built by the curation issues."""
