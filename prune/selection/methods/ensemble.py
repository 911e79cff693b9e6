"""Posterior "ensemble" coresets (seed 000 eq. 6; seed 001 Algorithm 1, line 5).

d(i, j) = (1/M) sum_m ||g_i(w + delta_m) - g_j(w + delta_m)||: the expected distance over the
M posterior samples stored by `prune features --posterior-samples M`. It needs M > 1; it is
``craig --posterior mean``.
"""

from prune.errors import PruneError
from prune.selection.methods.craig import Craig


class Ensemble(Craig):
    name = "ensemble"
    default_posterior = "mean"

    def __init__(self, store, options, device):
        if options.posterior == "point":
            raise PruneError("ensemble is craig with --posterior mean; for the unperturbed weights use --method craig")
        if store.posterior_samples < 2:
            raise PruneError(
                f"method ensemble needs posterior samples, but {store.path} has M = 1; "
                "create the store with `prune features --posterior-samples 4`"
            )
        super().__init__(store, options, device)
