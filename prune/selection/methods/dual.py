"""DUAL (Cho, Shin, Kang, Yun, ICML 2025): the DUAL score from the warm-up's p_y, and its
pruning-ratio-adaptive Beta sampling, per class.

Score (``field.dual.dual_score``), over the sliding windows W_k of J = 10 checkpoints (one window of
all T when T < J, as with prune's default 5-epoch warm-up; the paper reads the first 30 of 200 epochs):

  DUAL(x) = (1 / (T - J + 1)) sum_k std_{t∈W_k}(p_y^(t)) · (1 - mean_{t∈W_k}(p_y^(t))),

uncertainty times difficulty. Selection (``field.dual.dual_weights``, ``dual_sample``): k_c examples
of class c drawn without replacement with probability proportional to Beta(p̄_y; α, β) · DUAL(x),

  β = C (1 - μ_A)(1 - r^{c_D}),  α = C + 1 - β,  C = 15, c_D = 4,

p̄_y the mean p_y over the checkpoints, μ_A the mean p̄_y of the class's 10 highest scores and
r = 1 - k_c / n_c the class's pruning rate. At low rates the Beta favours the uncertain middle
p̄_y, at high rates (where keeping the top scores collapses) the easy end, p̄_y near 1. The authors'
code samples this way (``--sample beta``) at every rate, as prune does. Draws come from the
selection stream (``--seed``), class by class, while the plan is made.
"""

from __future__ import annotations

import torch

from prune.selection.field import dual
from prune.selection.methods.base import FieldMethod


class Dual(FieldMethod):
    """DUAL with ratio-adaptive Beta sampling (Cho et al. 2025); see the module docstring."""

    name = "dual"
    source = "prob_label_per_epoch"
    min_checkpoints = 2  # the spread of p_y over the checkpoints

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        options.check_checkpoints(store.checkpoints)

    def pools(self, rows, k, generator):
        """The part's rows in the order DUAL draws them: the k sampled first, then the rest (ascending)."""
        if k == 0:
            return [(rows, 0)]
        prob_label = self.store.prob_label(rows)
        score = dual.dual_score(prob_label)
        weights = dual.dual_weights(score, prob_label.to(torch.float64).mean(1), k / len(rows))
        drawn = dual.dual_sample(weights, k, generator)
        rest = torch.ones(len(rows), dtype=torch.bool)
        rest[drawn] = False
        return [(rows[torch.cat([drawn, torch.nonzero(rest).flatten()])], k)]

    def pick(self, pool, k):
        return torch.arange(k)

    def params(self):
        return {"window": dual.WINDOW, "c_d": dual.C_D, "scale": dual.SCALE, "anchors": dual.ANCHORS,
                "checkpoints": self.store.checkpoints}
