"""Geometry on the embedding: k-center greedy and Moderate-DS, per class.

Both read the penultimate embedding h at the unperturbed warm weights (``embedding_point`` of an
M > 1 store, the one sample of an M = 1 store); neither defines an expectation over posterior
samples, so ``--posterior mean`` is refused.

* ``kcenter`` (Sener & Savarese, ICLR 2018, Alg. 1; ``field.kcenter``): minimise the covering radius
  δ = max_i min_{c∈S} ||h_i - h_c|| (the bound of their Theorem 1) greedily, adding
  u = argmax_i min_{c∈S} ||h_i - h_c|| k times, a 2-approximation. It keeps the geometric extremes
  first, then fills in. The first centre is the first example of the class in a random order drawn
  from the selection stream (``--seed``).
* ``moderate`` (Xia et al., ICLR 2023; ``field.moderate``): with d_i = ||h_i - μ_c||, μ_c the class's
  mean embedding, keep the k examples with d_i nearest the class's median distance: neither the
  easy (near the centre) nor the hard (far out).
"""

from __future__ import annotations

import torch

from prune.selection.field.kcenter import kcenter_greedy
from prune.selection.field.moderate import moderate
from prune.selection.methods.base import FieldMethod


class EmbeddingMethod(FieldMethod):
    """A rule on the embedding at the unperturbed warm weights."""

    default_posterior = "point"
    posteriors = ("point",)
    source = "embedding"

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        self.embedding = store.posterior_features("point")[2]  # (n, 1, e)

    def embeddings(self, pool: torch.Tensor) -> torch.Tensor:
        """(p, e) float32 embeddings of the pool."""
        return self.embedding[pool][:, 0]


class KCenter(EmbeddingMethod):
    """k-center greedy (Sener & Savarese 2018, Alg. 1) from the first example of a seeded permutation."""

    name = "kcenter"

    def pools(self, rows, k, generator):
        return [(rows[torch.randperm(len(rows), generator=generator)], k)]  # the first is the first centre

    def pick(self, pool, k):
        return kcenter_greedy(self.embeddings(pool), k, start=0)


class Moderate(EmbeddingMethod):
    """Moderate-DS (Xia et al. 2023): the k examples whose distance to the class centre is nearest the median."""

    name = "moderate"

    def pick(self, pool, k):
        return moderate(self.embeddings(pool), k)
