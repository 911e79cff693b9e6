"""AdaCore: facility location on Hessian-preconditioned logit gradients (AdaCore eq. 6, 10-12).

u_i = g-bar_i / (H-bar_i + eps) elementwise, with g-bar and H-bar the exponential averages over
the warm-up checkpoints (eq. 7, 9) and eps = damping * mean(H-bar) over the training set, so
dead units never divide by zero. With M > 1 posterior samples, u is formed per sample from that
sample's g and a = p(1 - p) at the final weights and the distance is their expectation.
"""

import torch

from prune.errors import PruneError
from prune.selection.methods.base import FacilityLocationMethod
from prune.selection.methods.distances import expected_euclidean


class AdaCore(FacilityLocationMethod):
    name = "adacore"

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        if store.posterior_samples == 1:
            grad, hess = store.grad_logit_ema[:, None], store.hess_logit_ema[:, None]
        else:
            grad, hess = store.grad_logit, store.hess_logit
        self.eps = options.damping * float(hess.double().mean())
        self.preconditioned = (grad.double() / (hess.double() + self.eps)).float()
        if not torch.isfinite(self.preconditioned).all():
            raise PruneError("AdaCore preconditioned gradients are not finite; increase --damping")

    def params(self):
        return {**super().params(), "damping": self.options.damping, "eps": self.eps,
                "smoothed": self.store.posterior_samples == 1}

    def distances(self, rows):
        return expected_euclidean(self.preconditioned[rows])
