"""What one seed makes: the character's proportions, colours, clothing and hair, sampled before
any geometry exists so they can be stored in the .glb and compared across seeds."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from render.skeleton import Proportions

HAIR_STYLES = ("bald", "cap", "long", "bun", "ridge")
PATTERNS = ("solid", "stripes", "checks", "dots")


@dataclass(frozen=True)
class CharacterParams:
    """Everything that makes one procedural character; a pure function of its seed."""
    seed: int
    proportions: Proportions
    girth: float
    limb_girth: float
    head_width: float
    head_depth: float
    jaw_taper: float
    skin: tuple
    hair_colour: tuple
    shirt_colour: tuple
    shirt_colour2: tuple
    pants_colour: tuple
    shoes_colour: tuple
    iris_colour: tuple
    shirt_pattern: str
    pants_pattern: str
    sleeves: str   # none | short | long
    trousers: str  # shorts | long
    hair_style: str

    def to_json(self) -> dict:
        return asdict(self)


def sample_params(seed: int) -> CharacterParams:
    rng = np.random.default_rng([seed, 0x5EED])
    colour = lambda lo=0, hi=255: tuple(int(c) for c in rng.integers(lo, hi, 3))  # noqa: E731
    skin_tones = np.array([[255, 224, 196], [241, 194, 153], [224, 172, 105], [198, 134, 66],
                           [141, 85, 36], [92, 58, 32], [255, 205, 180]])
    tone = skin_tones[rng.integers(len(skin_tones))] + rng.integers(-12, 12, 3)
    hair_tones = np.array([[20, 15, 10], [70, 45, 25], [140, 90, 40], [220, 190, 120], [170, 60, 30],
                           [200, 200, 205], [40, 60, 160], [180, 40, 120]])
    proportions = Proportions(
        height=float(1.7 * np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
        heads_tall=float(rng.uniform(5.2, 8.0)),
        leg_fraction=float(rng.uniform(0.43, 0.5)),
        shoulder_width=float(rng.uniform(0.2, 0.26)),
        hip_width=float(rng.uniform(0.15, 0.2)),
        arm_factor=float(rng.uniform(0.9, 1.1)),
        foot_length=float(rng.uniform(0.13, 0.16)),
    )
    return CharacterParams(
        seed=seed, proportions=proportions,
        girth=float(rng.uniform(0.8, 1.35)), limb_girth=float(rng.uniform(0.8, 1.3)),
        head_width=float(rng.uniform(0.85, 1.15)), head_depth=float(rng.uniform(0.9, 1.1)),
        jaw_taper=float(rng.uniform(0.0, 0.35)),
        skin=tuple(int(c) for c in np.clip(tone, 0, 255)),
        hair_colour=tuple(int(c) for c in hair_tones[rng.integers(len(hair_tones))]),
        shirt_colour=colour(), shirt_colour2=colour(), pants_colour=colour(0, 200), shoes_colour=colour(0, 120),
        iris_colour=colour(0, 140),
        shirt_pattern=str(rng.choice(PATTERNS)), pants_pattern=str(rng.choice(PATTERNS[:2])),
        sleeves=str(rng.choice(("none", "short", "long"))), trousers=str(rng.choice(("shorts", "long"), p=(0.3, 0.7))),
        hair_style=str(rng.choice(HAIR_STYLES, p=(0.1, 0.3, 0.25, 0.2, 0.15))),
    )


def character_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
