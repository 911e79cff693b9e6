"""Dynamic selection: mini-batch coresets selected during training, their subset log, its replay.

``loop`` (``run_dynamic`` and the algorithm), ``config``, ``budget``, ``selector``,
``quadratic`` (CREST's rule), ``trainer`` (SGD on given batches; ``replay``), ``subset_log``.
"""

from prune.dynamic.budget import Budget, plan_budget
from prune.dynamic.config import DYNAMIC_KINDS, UPDATE_RULES, DynamicConfig
from prune.dynamic.loop import run_dynamic
from prune.dynamic.selector import Coreset, Selector
from prune.dynamic.trainer import DynamicResult, replay, state_equal

__all__ = ["DYNAMIC_KINDS", "UPDATE_RULES", "Budget", "Coreset", "DynamicConfig", "DynamicResult", "Selector",
           "plan_budget", "replay", "run_dynamic", "state_equal"]
