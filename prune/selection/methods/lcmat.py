"""LCMat: match loss and curvature, d = ||G_i - G_j|| + (rho/2) sum_{k in K} |lambda_ik - lambda_jk|.

LCMat eq. 10, with G = (p - y) (x) [h; 1] the last-layer gradient and lambda = p(1 - p) (x)
[h; 1]^2 the diagonal of the last-layer Hessian. K holds the ``top_k`` coordinates of lambda
with the largest variance within each class pool (``top_k_scope="class"``, the default and what
the authors' code does), or over the whole training set (``"all"``, LCMat §3.3, B.2). Within a
class pool, "all" leaves about 90 % of K in other classes' rows (benchmarks/lcmat_scope.py);
"class" was not worse at any rho on digits (docs/results.md). Neither G nor lambda is ever built
whole: the variance comes from two C x (e+1) products and only the K chosen columns of lambda
are formed. With ``--posterior mean`` the distance is the expectation over the posterior samples
(the top-K then chosen over all of them).
"""

from __future__ import annotations

import torch

from prune.errors import PruneError
from prune.selection.methods.base import DistanceMethod
from prune.selection.methods.distances import expected_last_layer, peak_bytes



def with_bias(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([h, torch.ones(*h.shape[:-1], 1, dtype=h.dtype)], -1)


def top_variance_coordinates(hess: torch.Tensor, embedding: torch.Tensor, k: int) -> torch.Tensor:
    """Flat (c, j) indices of the k lambda coordinates with the largest variance.

    hess (n, M, C), embedding (n, M, e); all n * M rows count as draws. Uses
    Var[a_c h~_j^2] = E[a_c^2 h~_j^4] - E[a_c h~_j^2]^2 = (A^2)^T H^4 / N - (A^T H^2 / N)^2.
    """
    a = hess.double().reshape(-1, hess.shape[-1])
    h2 = with_bias(embedding.double()).reshape(-1, embedding.shape[-1] + 1).square()
    count = len(a)
    mean = a.T @ h2 / count
    variance = (a.square().T @ h2.square()) / count - mean.square()
    order = torch.argsort(variance.flatten(), descending=True, stable=True)
    return order[:k]


class LCMat(DistanceMethod):
    name = "lcmat"

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        width = store.num_classes * (store.embedding.shape[-1] + 1)
        if not 0 < options.top_k <= width:
            raise PruneError(f"--top-k must be in 1..{width} (the size of the last layer) for this store",
                             parameters=True)
        self.grad, self.hess, self.embedding = store.posterior_features(self.posterior)  # each (n, M', .)
        self.coordinates = None
        if options.top_k_scope == "all":
            self.coordinates = top_variance_coordinates(self.hess[:], self.embedding[:], options.top_k)

    def params(self):
        return {**super().params(), "rho": self.options.rho, "top_k": self.options.top_k,
                "top_k_scope": self.options.top_k_scope}

    @staticmethod
    def curvature(hess: torch.Tensor, embedding: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        """lambda of a pool, (p, M, C) and (p, M, e), at the chosen flat (c, j) coordinates: (p, M, K)."""
        width = embedding.shape[-1] + 1
        a = hess.double()
        h2 = with_bias(embedding.double()).square()
        return a[..., coordinates // width] * h2[..., coordinates % width]

    def select_pools(self, rows, pools, done=lambda: None):
        if self.options.top_k_scope == "class":
            self.coordinates = top_variance_coordinates(self.hess[rows], self.embedding[rows], self.options.top_k)
        return super().select_pools(rows, pools, done)

    @staticmethod
    def peak_bytes(p):
        return peak_bytes(p, 3)  # expected_last_layer's three buffers per block

    def distances(self, rows):
        hess, embedding = self.hess[rows], self.embedding[rows]  # one read of each per pool
        lam = self.curvature(hess, embedding, self.coordinates)
        return expected_last_layer(self.grad[rows], embedding, lam, 0.5 * self.options.rho)
