"""Selection methods: each a small module defining one distance over a shared greedy."""

from prune.features.store import POSTERIORS
from prune.selection.methods.adacore import AdaCore
from prune.selection.methods.base import DistanceMethod, MethodOptions
from prune.selection.methods.craig import Craig
from prune.selection.methods.crest import Crest
from prune.selection.methods.ensemble import Ensemble
from prune.selection.methods.herding import Herding
from prune.selection.methods.lcmat import TOP_K_SCOPES, LCMat

DISTANCE_METHODS: dict[str, type[DistanceMethod]] = {
    cls.name: cls for cls in (Herding, Craig, AdaCore, LCMat, Ensemble, Crest)
}
# uniform sampling per class (after the difficulty stage for clean and ccs; within its strata for ccs)
SAMPLING = ("random", "clean", "ccs")
METHODS = (*SAMPLING, *DISTANCE_METHODS)


def averages_posterior(method: str, posterior: str | None = None) -> bool:
    """Whether ``method`` with ``--posterior`` ``posterior`` (None: its default) needs the M posterior samples."""
    return method in DISTANCE_METHODS and (posterior or DISTANCE_METHODS[method].default_posterior) == "mean"

__all__ = ["DISTANCE_METHODS", "METHODS", "averages_posterior", "POSTERIORS", "SAMPLING", "TOP_K_SCOPES", "DistanceMethod", "MethodOptions"]
