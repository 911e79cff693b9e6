"""Posterior "ensemble" coresets (seed 000 eq. 6; seed 001 Algorithm 1, line 5).

d(i, j) = (1/M) sum_m ||g_i(w + delta_m) - g_j(w + delta_m)||: the expected distance over the
M posterior samples stored by `prune features --posterior-samples M`. It needs M > 1.
"""

from prune.errors import PruneError
from prune.selection.methods.craig import Craig


class Ensemble(Craig):
    name = "ensemble"

    def __init__(self, store, options, device):
        if store.posterior_samples < 2:
            raise PruneError(
                f"method ensemble needs posterior samples, but {store.path} has M = 1; "
                "create the store with `prune features --posterior-samples 4`"
            )
        super().__init__(store, options, device)
