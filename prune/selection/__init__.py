"""Selection: class-balanced selection over a feature store, written as a manifest.

``budget`` (examples per class), ``difficulty`` (the stage every method runs through first:
scores, dropping, strata), ``engine`` (greedy facility location, the papers' methods' greedy),
``matching`` (greedy kernel herding, ``herding``'s), ``methods/`` (the method protocol, one
module per method, one registry), ``coreset`` (``Candidates``: what selection starts from),
``plan`` (the first half of ``select``: budgets, parts, pools; ``--dry-run`` prints it), ``run``
(``select``: the plan, run, as a ``Manifest``).
"""

from prune.selection.budget import BALANCES, Budget, class_budgets, exact_fraction, largest_remainder
from prune.selection.coreset import Candidates, check_request, random_subset
from prune.selection.difficulty import DifficultyConfig
from prune.selection.engine import facility_location, split_pool
from prune.selection.methods import METHODS, MethodConfig, method_class
from prune.selection.plan import SelectionPlan, plan_selection
from prune.selection.run import select

__all__ = ["BALANCES", "METHODS", "Budget", "Candidates", "DifficultyConfig", "MethodConfig", "SelectionPlan",
           "check_request", "class_budgets", "exact_fraction", "facility_location", "largest_remainder",
           "method_class", "plan_selection", "random_subset", "select", "split_pool"]
