"""Selection methods: each a small module defining one distance over the shared engine."""

from prune.features.store import POSTERIORS
from prune.selection.methods.adacore import AdaCore
from prune.selection.methods.base import FacilityLocationMethod, MethodOptions
from prune.selection.methods.craig import Craig
from prune.selection.methods.crest import Crest
from prune.selection.methods.ensemble import Ensemble
from prune.selection.methods.lcmat import TOP_K_SCOPES, LCMat

FACILITY_LOCATION: dict[str, type[FacilityLocationMethod]] = {
    cls.name: cls for cls in (Craig, AdaCore, LCMat, Ensemble, Crest)
}
# uniform sampling per class (after the difficulty stage for clean and ccs; within its strata for ccs)
SAMPLING = ("random", "clean", "ccs")
METHODS = (*SAMPLING, *FACILITY_LOCATION)

__all__ = ["FACILITY_LOCATION", "METHODS", "POSTERIORS", "SAMPLING", "TOP_K_SCOPES", "FacilityLocationMethod", "MethodOptions"]
