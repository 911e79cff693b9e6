"""D2 pruning (Maharana, Yadav, Bansal, ICLR 2024): message passing on a kNN graph of the embedding,
run within CCS's strata, per class.

As the authors run it on CIFAR-10 (their README: ``--coreset-key forgetting --mis-ratio 0.4
--stratas 25 --n-neighbor 5 --gamma 0.1 --graph-mode sum --graph-sampling-mode weighted``, class-balanced):

1. the difficulty s_i is the forgetting-event count over the warm-up checkpoints (Toneva et al. 2019,
   §3; ``correct_per_epoch``), non-negative as D2 needs;
2. CCS's hard cut-off and strata (Zheng et al. 2023, Alg. 1; ``field.ccs.ccs_strata``): drop the
   floor(β n_c) hardest, β = ``ccs_beta(k_c / n_c)`` (0.4 at 10 % kept, the authors' mis-ratio there),
   then 25 equal-width strata of s with the budget shared equally;
3. within each stratum (``field.d2.d2_select``), on the graph joining each example to its 5 nearest
   neighbours N(i) by ||h_i - h_j|| at the unperturbed warm weights: forward messages
   s_i <- s_i + sum_{j∈N(i)} exp(-γ_f d(i, j)) s_j (γ_f = 1), then k_b rounds of picking the highest
   s_i and lowering its neighbours, s_j <- s_j - exp(-γ_r d(i, j)) s_i (γ_r = 0.1).

It keeps difficult examples from dense difficult regions first, and spreads its picks (the reverse
messages) over each difficulty level. Deterministic: no draw from the seed.
"""

from __future__ import annotations

import torch

from prune.selection.field import d2
from prune.selection.field.ccs import ccs_beta, ccs_strata
from prune.selection.field.scores import forgetting_events
from prune.selection.methods.geometry import EmbeddingMethod

STRATA = 25  # the authors' CIFAR-10 setting (their README)


class D2(EmbeddingMethod):
    """D2 pruning (Maharana et al. 2024) within CCS strata of forgetting scores; see the module docstring."""

    name = "d2"
    source = "embedding, correct_per_epoch"

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        self.betas: list[float] = []  # per part given to ``pools``: the hard cut-off's β

    def forgetting(self, pool: torch.Tensor) -> torch.Tensor:
        """(p,) float64 forgetting-event counts of the pool's examples (D2's node feature)."""
        return forgetting_events(self.store.correct(pool))

    def pools(self, rows, k, generator):
        beta = ccs_beta(k / len(rows)) if k else 0.0
        self.betas.append(beta)
        return [(rows[part], budget) for part, budget in ccs_strata(self.forgetting(rows), k, beta, STRATA)]

    def pick(self, pool, k):
        return d2.d2_select(self.embeddings(pool), self.forgetting(pool), k)

    def params(self):
        return {"score": "forgetting", "beta": self.betas, "strata": STRATA, "neighbours": d2.NEIGHBOURS,
                "gamma_forward": d2.GAMMA_FORWARD, "gamma_reverse": d2.GAMMA_REVERSE}
