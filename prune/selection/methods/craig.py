"""CRAIG: facility location on logit gradients, d(i, j) = ||g_i - g_j|| (CREST eq. 5).

The gradients at the unperturbed warm weights (``--posterior point``, the default), or the
expectation of the distance over the store's M posterior samples (``--posterior mean``:
posterior-averaged CRAIG, methods.md; the ``ensemble`` method).
"""

from prune.selection.methods.base import DistanceMethod
from prune.selection.methods.distances import expected_euclidean


class Craig(DistanceMethod):
    name = "craig"

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        self.grad = store.posterior_features(self.posterior)[0]  # (n, M', C)

    def distances(self, rows):
        return expected_euclidean(self.grad[rows])
