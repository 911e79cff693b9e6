"""Selection methods: each a small module defining one distance over the shared engine."""

from prune.methods.adacore import AdaCore
from prune.methods.base import FacilityLocationMethod, MethodOptions
from prune.methods.craig import Craig
from prune.methods.crest import Crest
from prune.methods.ensemble import Ensemble
from prune.methods.lcmat import LCMat

FACILITY_LOCATION: dict[str, type[FacilityLocationMethod]] = {
    cls.name: cls for cls in (Craig, AdaCore, LCMat, Ensemble, Crest)
}
METHODS = ("random", *FACILITY_LOCATION)

__all__ = ["FACILITY_LOCATION", "METHODS", "MethodOptions"]
