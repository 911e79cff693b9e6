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
  training set, seeded by ``random_streams.generator(store.meta["seed"], "hessian_batches")`` (the last chunk
  holds the n mod b_H remainder when b_H does not divide n);
* eps = damping * mean(H-bar) over the training set, so dead units never divide by zero.

``hessian_batch = 1`` divides each example by its *own* p(1 - p): the per-sample variant. It makes
u_i close to -1/p_y on the label's coordinate, i.e. a ranking by confidence, and puts
confidently mislabelled examples (p_y -> 0) far from everything; it is kept as an option.
"""

import torch

from prune.errors import PruneError
from prune import random_streams
from prune.features.store import chunk_rows, with_sample_axis
from prune.selection.methods.base import DistanceMethod
from prune.selection.methods.distances import expected_euclidean

def hessian_batches(n: int, batch: int, seed: int) -> torch.Tensor:
    """(n,) id of each example's mini-batch: chunks of ``batch`` of a seeded permutation of 0..n-1."""
    perm = torch.randperm(n, generator=random_streams.generator(seed, "hessian_batches"))
    ids = torch.empty(n, dtype=torch.int64)
    ids[perm] = torch.arange(n) // batch
    return ids


class ExpectedHessian:
    """H-bar of every example, from one pass over the store: the per-mini-batch means, read by rows.

    ``hess`` is (n, M, C), a stored array or a tensor; it is read a store chunk at a time (``chunk_rows``), so
    memory holds one block and the n / b_H batch means (with b_H = 1, H-bar is ``hess`` itself and
    the one "batch" only gives the mean).
    ``mean`` is H-bar's mean over the training set (for eps).
    """

    def __init__(self, hess, batch: int, seed: int):
        n, width = len(hess), hess.shape[1:]
        self.hess, self.batch = hess, batch
        self.ids = hessian_batches(n, batch, seed) if batch > 1 else torch.zeros(n, dtype=torch.int64)
        count = int(self.ids.max()) + 1 if n else 0
        sums = torch.zeros(count, *width, dtype=torch.float64)
        for block in chunk_rows(n):
            sums.index_add_(0, self.ids[block], hess[block].double())
        self.mean = float(sums.sum()) / max(n * width.numel(), 1)
        sizes = torch.bincount(self.ids, minlength=count).double()
        self.means = sums.div_(sizes.reshape(count, *[1] * len(width)))

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        """float64 (len(rows), M, C): each row's mini-batch mean (its own diagonal with b_H = 1)."""
        return self.hess[rows].double() if self.batch == 1 else self.means[self.ids[rows]]


class AdaCore(DistanceMethod):
    name = "adacore"

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        if self.posterior == "point":
            self.grad, hess = with_sample_axis(store.grad_logit_ema), with_sample_axis(store.hess_logit_ema)
        else:
            self.grad, hess = store.grad_logit, store.hess_logit
        self.hess = ExpectedHessian(hess, options.hessian_batch, int(store.meta["seed"]))  # H-bar
        self.eps = options.damping * self.hess.mean

    def params(self):
        return {**super().params(), "damping": self.options.damping, "eps": self.eps,
                "hessian_batch": self.options.hessian_batch, "smoothed": self.posterior == "point"}

    def preconditioned(self, rows: torch.Tensor) -> torch.Tensor:
        """u of ``rows``, (p, M', C) float32."""
        u = (self.grad[rows].double() / (self.hess[rows] + self.eps)).float()
        if not torch.isfinite(u).all():
            raise PruneError("AdaCore preconditioned gradients are not finite; increase --damping", parameters=True)
        return u

    def distances(self, rows):
        return expected_euclidean(self.preconditioned(rows))
