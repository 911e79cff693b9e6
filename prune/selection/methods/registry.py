"""The one registry of selection methods, by name, in the order ``--help`` lists them."""

from __future__ import annotations

from prune.errors import PruneError
from prune.selection.methods.adacore import AdaCore
from prune.selection.methods.base import Method
from prune.selection.methods.craig import Craig
from prune.selection.methods.crest import Crest
from prune.selection.methods.d2 import D2
from prune.selection.methods.dual import Dual
from prune.selection.methods.ensemble import Ensemble
from prune.selection.methods.geometry import KCenter, Moderate
from prune.selection.methods.herding import Herding
from prune.selection.methods.lcmat import LCMat
from prune.selection.methods.ranking import Aum, El2n, Entropy, Forgetting, Grand, LeastConfidence
from prune.selection.methods.sampling import Ccs, Clean, Random

REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (
    Random, Clean, Ccs, Herding, Craig, AdaCore, LCMat, Ensemble, Crest,
    El2n, Grand, Forgetting, Aum, Entropy, LeastConfidence, KCenter, Moderate, D2, Dual)}
METHODS = tuple(REGISTRY)


def method_class(name: str) -> type[Method]:
    """The class of method ``name``; an unknown name is a ``PruneError`` listing the known ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise PruneError(f"unknown --method {name!r}; choose one of: {', '.join(METHODS)}",
                         parameters={"--method": "method"}) from None  # select(method=...), select_coreset's method
