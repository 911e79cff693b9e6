"""The sampling methods: uniform picks per class, after the difficulty stage each runs through.

``random`` is the plain baseline (no stage); ``clean`` drops the examples whose label the warm
model's posterior believes less than chance (``drop_hard="auto"``) and samples the rest;
``ccs`` is coverage-centric selection (Zheng et al., ICLR 2023, Alg. 1) on the stage: the same
dropping, CCS's hard cut-off β (``cutoff``), then uniform samples across 10 equal-width difficulty
strata with equal budgets (``strata_budget="equal"``).
"""

from prune.selection.difficulty import DifficultyConfig
from prune.selection.field.ccs import ccs_beta
from prune.selection.methods.base import SamplingMethod


class Random(SamplingMethod):
    name = "random"
    default_difficulty = DifficultyConfig(drop_hard=0)


class Clean(SamplingMethod):
    name = "clean"
    default_difficulty = DifficultyConfig()


class Ccs(SamplingMethod):
    """CCS (Zheng et al., ICLR 2023, Alg. 1) per class: drop the floor(β n_c) hardest of class c by the
    stage's score (EL2N by default), with β = ``ccs_beta(k_c / n_c)`` from the pruning rate
    r = 1 - k_c / n_c (the paper's table: β = 0, 0.1, 0.2, 0.3, 0.4 at r = 30, 50, 70, 80, 90 %,
    interpolated), after the stage's own dropping; split the rest into equal-width strata of the score,
    share the budget equally (water-filling); sample uniformly within each. The cut-off acts through
    the stage, so ``--drop-hard 0 --strata 1`` leaves plain uniform sampling.
    """

    name = "ccs"
    default_difficulty = DifficultyConfig(strata=10)

    def cutoff(self, k, n):
        return ccs_beta(k / n) if k else 0.0
