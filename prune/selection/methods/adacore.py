"""AdaCore: facility location on Hessian-preconditioned logit gradients (AdaCore eq. 6, 10-12).

u_i = g-bar_i / (H-bar_i + eps) elementwise, where

* g-bar_i is example i's own logit gradient: the exponential average over the warm-up
  checkpoints (eq. 7) with ``--posterior point`` (the default), else (``mean``) each posterior
  sample's g at the final weights (the distance is then the expectation over the M samples);
* H-bar_i is the *expected* Hessian diagonal of §5.2 ("Calculating the Curvature": "we use a
  batch size of b_H = 64 to calculate the expected Hessian diagonal over the training data"):
  the mean of the per-example diagonals a = p(1 - p) (the checkpoint average of eq. 9 with
  ``point``, else per posterior sample) over the mini-batch of ``hessian_batch`` (b_H) examples that
  i falls in. The mini-batches are consecutive chunks of one random permutation of the whole
  training set, seeded by ``stream_seed(store.meta["seed"], HESSIAN_STREAM)`` (the last chunk
  holds the n mod b_H remainder when b_H does not divide n);
* eps = damping * mean(H-bar) over the training set, so dead units never divide by zero.

``hessian_batch = 1`` divides each example by its *own* p(1 - p): the per-sample variant. It makes
u_i close to -1/p_y on the label's coordinate, i.e. a ranking by confidence, and puts
confidently mislabelled examples (p_y -> 0) far from everything; it is kept as an option.
"""

import torch

from prune.errors import PruneError
from prune.features.build import stream_seed
from prune.selection.methods.base import DistanceMethod
from prune.selection.methods.distances import expected_euclidean

# random stream of the H-bar mini-batches: stream_seed(seed, HESSIAN_STREAM); prune.features.build
# uses 1-5 and prune.dynamic 30-34.
HESSIAN_STREAM = 6


def hessian_batches(n: int, batch: int, seed: int) -> torch.Tensor:
    """(n,) id of each example's mini-batch: chunks of ``batch`` of a seeded permutation of 0..n-1."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(seed, HESSIAN_STREAM)))
    ids = torch.empty(n, dtype=torch.int64)
    ids[perm] = torch.arange(n) // batch
    return ids


def batch_averaged(hess: torch.Tensor, batch: int, seed: int) -> torch.Tensor:
    """Each row of ``hess`` (n, ...) replaced by the float64 mean over its mini-batch (``hessian_batches``)."""
    hess = hess.double()
    if batch == 1:
        return hess
    ids = hessian_batches(len(hess), batch, seed)
    count = int(ids.max()) + 1 if len(ids) else 0
    sums = torch.zeros(count, *hess.shape[1:], dtype=torch.float64).index_add_(0, ids, hess)
    sizes = torch.bincount(ids, minlength=count).double().reshape(count, *[1] * (hess.dim() - 1))
    return (sums / sizes)[ids]


class AdaCore(DistanceMethod):
    name = "adacore"

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        if self.posterior == "point":
            grad, hess = store.grad_logit_ema[:, None], store.hess_logit_ema[:, None]
        else:
            grad, hess = store.grad_logit[:], store.hess_logit[:]
        self.hess = batch_averaged(hess, options.hessian_batch, int(store.meta["seed"]))  # H-bar, (n, M, C)
        self.eps = options.damping * float(self.hess.mean())
        self.preconditioned = (grad.double() / (self.hess + self.eps)).float()
        if not torch.isfinite(self.preconditioned).all():
            raise PruneError("AdaCore preconditioned gradients are not finite; increase --damping")

    def params(self):
        return {**super().params(), "damping": self.options.damping, "eps": self.eps,
                "hessian_batch": self.options.hessian_batch, "smoothed": self.posterior == "point"}

    def distances(self, rows):
        return expected_euclidean(self.preconditioned[rows])
