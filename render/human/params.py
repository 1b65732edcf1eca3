"""What one seed makes of a human: age, build and ancestry (MakeHuman's macro values), skin tone,
clothing, hair and the rig it ships with, sampled before any geometry so they can be stored in the
.glb and compared across seeds."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from render.human.assets import RIGS
from render.human.shape import RACES

HAIR_STYLES = ("bald", "short", "long")
TOPS = ("tank", "tshirt", "longsleeve")
BOTTOMS = ("trousers", "shorts", "skirt")
PATTERNS = ("solid", "stripes", "checks")
AGES = (4.0, 80.0)  # years: the sampled range


@dataclass(frozen=True)
class HumanParams:
    """Everything that makes one human character; a pure function of its seed."""
    seed: int
    rig: str
    age: float          # years
    gender: float       # 0 female .. 1 male
    muscle: float       # 0..1, 0.5 average
    weight: float       # 0..1, 0.5 average
    height: float       # 0..1, 0.5 average for the age
    proportions: float  # 0.5 neutral .. 1 ideal
    ancestry: dict
    skin: tuple
    hair_style: str
    hair_colour: tuple
    iris_colour: tuple
    top: str
    top_colour: tuple
    top_colour2: tuple
    top_pattern: str
    bottom: str
    bottom_colour: tuple
    shoes_colour: tuple

    def to_json(self) -> dict:
        return asdict(self)


def skin_tone(rng: np.random.Generator) -> tuple:
    """A skin colour along the range from very light to very dark (sRGB), with a little hue spread."""
    stops = np.array([[255, 224, 200], [236, 192, 160], [214, 160, 120], [180, 124, 86], [132, 86, 56],
                      [88, 56, 38], [60, 40, 30]], float)
    t = rng.uniform(0, len(stops) - 1)
    k = min(int(t), len(stops) - 2)
    tone = stops[k] + (t - k) * (stops[k + 1] - stops[k]) + rng.normal(0, 5, 3)
    return tuple(int(c) for c in np.clip(tone, 0, 255))


def sample_human(seed: int, index: int | None = None) -> HumanParams:
    """The human of ``seed``; ``index`` (its place in a set) cycles the rig, so a set of two or
    more holds every rig."""
    rng = np.random.default_rng([seed, 0x4EA1])
    colour = lambda lo=0, hi=255: tuple(int(c) for c in rng.integers(lo, hi, 3))  # noqa: E731
    # Ages log-uniform over 4..80 years: children and adults alike.
    age = float(np.exp(rng.uniform(np.log(AGES[0]), np.log(AGES[1]))))
    child = age < 12
    share = rng.dirichlet(np.full(len(RACES), 0.4))
    hair = np.array([[25, 18, 12], [60, 40, 25], [110, 75, 40], [200, 165, 100], [150, 60, 30], [190, 190, 195]])
    greying = age > 55 and rng.random() < 0.6
    return HumanParams(
        seed=seed, rig=RIGS[(index if index is not None else int(rng.integers(len(RIGS)))) % len(RIGS)],
        age=round(age, 2), gender=round(float(rng.uniform(0, 1)), 3),
        muscle=round(float(rng.uniform(0.2, 0.85)), 3), weight=round(float(rng.uniform(0.15, 0.95)), 3),
        # MakeHuman's children come out short at an average height: sample them taller.
        height=round(float(rng.uniform(0.55, 0.9) if child else rng.uniform(0.2, 0.85)), 3),
        proportions=round(float(rng.uniform(0.5, 1.0)), 3),
        ancestry={race: round(float(s), 3) for race, s in zip(RACES, share)},
        skin=skin_tone(rng),
        hair_style=str(rng.choice(HAIR_STYLES, p=(0.1, 0.5, 0.4))),
        hair_colour=tuple(int(c) for c in (hair[5] if greying else hair[rng.integers(5)])),
        iris_colour=tuple(int(c) for c in [[70, 45, 25], [40, 90, 140], [80, 110, 60], [30, 25, 20]][rng.integers(4)]),
        top=str(rng.choice(TOPS)), top_colour=colour(), top_colour2=colour(), top_pattern=str(rng.choice(PATTERNS)),
        bottom=str(rng.choice(BOTTOMS, p=(0.55, 0.25, 0.2))), bottom_colour=colour(0, 200),
        shoes_colour=colour(0, 120),
    )
