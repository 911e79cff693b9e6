"""CRAIG: facility location on logit gradients, d(i, j) = ||g_i - g_j|| (CREST eq. 5).

With M > 1 posterior samples in the store the distance is the expectation over them
(posterior-averaged CRAIG, methods.md).
"""

from prune.selection.methods.base import FacilityLocationMethod
from prune.selection.methods.distances import expected_euclidean


class Craig(FacilityLocationMethod):
    name = "craig"

    def distances(self, rows):
        return expected_euclidean(self.store.grad_logit[rows])
