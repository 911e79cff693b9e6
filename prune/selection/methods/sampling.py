"""The sampling methods: uniform picks per class, after the difficulty stage each runs through.

``random`` is the plain baseline (no stage); ``clean`` drops the examples whose label the warm
model's posterior believes less than chance (``drop_hard="auto"``) and samples the rest;
``ccs`` (coverage-centric selection, Zheng et al., ICLR 2023, Alg. 1) drops the same, then
samples across 10 equal-width difficulty strata with equal budgets (``strata_budget="equal"``).
"""

from prune.selection.difficulty import DifficultyConfig
from prune.selection.methods.base import SamplingMethod


class Random(SamplingMethod):
    name = "random"
    default_difficulty = DifficultyConfig(drop_hard=0)


class Clean(SamplingMethod):
    name = "clean"
    default_difficulty = DifficultyConfig()


class Ccs(SamplingMethod):
    name = "ccs"
    default_difficulty = DifficultyConfig(strata=10)
