"""Herding: a subset whose last-layer gradients are distributed as its class's (kernel herding).

d(i, j) = ||G_i - G_j||, G = (p - y) (x) [h; 1] the last-layer gradient (LCMat's first term,
CRAIG's bound on the full gradient's error), its expectation over the store's M posterior
samples (``--posterior mean``, the default: seed 000 eq. 6, as ``ensemble``) or at the
unperturbed warm weights (``point``). The
greedy is kernel herding on the Gaussian kernel of d (``prune.selection.matching``): it lowers
the maximum mean discrepancy between the picks and the pool, so the subset follows the class's
gradient distribution -- its typical examples in proportion, its rare ones rarely -- where
facility location on the same distance spreads a small budget evenly over it, far-apart hard
examples included. Every pick stands for p / k examples of its pool (gamma).

On Fashion-MNIST at 1 % the posterior mean gained half a point over the point estimate (+1.0
against +0.5 over random, 3 seeds); on digits the two tie (docs/results.md).

Speed (issue 29). Each pool's distances are computed on and above the diagonal only, and
``herd`` reads nothing else (no mirrored copy, half the kernel and median work). A store in
dataset order puts every class in every chunk, so reading one class's rows decompresses the whole
of ``grad_logit`` and ``embedding`` (M samples each), once per class; so at the first pool the
whole store's features are read, in one pass, whenever they take no more memory than that pool's
(p, p) float32 matrix (the copy of the matrix the median once made, which ``peak_bytes`` still
counts); otherwise each pool reads its own rows.
"""

import torch

from prune.features.store import StoredRows
from prune.selection.difficulty import DifficultyConfig
from prune.selection.matching import herd
from prune.selection.methods.base import DistanceMethod, PoolResult
from prune.selection.methods.distances import expected_last_layer, peak_bytes


class Herding(DistanceMethod):
    name = "herding"
    default_posterior = "mean"
    default_difficulty = DifficultyConfig()  # drops the unlikely labels; no strata: it keeps the distribution itself
    similarity = "exp(-d^2 / (2 m^2)), m the median distance in each pool; objective: MMD^2 to the pool"

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        self.grad, _, self.embedding = store.posterior_features(self.posterior)  # each (n, M', .)
        self.read_whole = isinstance(self.grad, StoredRows)  # until the first pool decides (module docstring)
        self.buffer = torch.empty(0)  # the pools' distances, one after another (no fresh matrix's page faults)

    @staticmethod
    def peak_bytes(p):
        # expected_last_layer's buffers, and the whole store's features when they are read at once (at most
        # 4 p^2, module docstring); herd's own copies are small (2 p^2 only if the median's bracket misses)
        return peak_bytes(p, 3) + 4 * p * p

    def distances(self, rows, upper=False):
        """The pool's (p, p) distances; ``upper``: only the entries on and above the diagonal (all ``herd``
        reads), in ``self.buffer``, which the next pool overwrites."""
        if self.read_whole:
            self.read_whole = False
            if 4 * (self.grad.numel() + self.embedding.numel()) <= 4 * len(rows) ** 2:
                everything = torch.arange(len(self.grad))
                self.grad, self.embedding = self.grad[everything], self.embedding[everything]
        grad, embedding = self.grad[rows], self.embedding[rows]
        no_curvature = torch.empty(*grad.shape[:2], 0)
        if not upper:
            return expected_last_layer(grad, embedding, no_curvature, 0.0)
        if self.buffer.numel() < len(rows) ** 2:
            self.buffer = torch.empty(0)  # freed before the larger one is allocated
            self.buffer = torch.empty(len(rows) ** 2)
        return expected_last_layer(grad, embedding, no_curvature, 0.0, upper=True, out=self.buffer)

    def select_pools(self, rows, pools, done=lambda: None):
        results = []
        for part, budget in pools:
            if budget == 0:
                continue
            order, weights, objective = self.greedy(self.distances(part, upper=True).to(self.device, torch.float32),
                                                    budget)
            results.append(PoolResult(part[order.cpu()], weights.cpu().double(), objective))
            done()
        return results

    def greedy(self, distances, k):
        """Kernel herding on the upper triangle of ``distances`` (``prune.selection.matching.herd``)."""
        result = herd(distances, k)
        weights = torch.full((len(result.order),), len(distances) / len(result.order), dtype=torch.float64)
        return result.order, weights, result.mmd2
