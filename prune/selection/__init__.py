"""Selection: class-balanced greedy selection over a feature store, written as a manifest.

``budget`` (examples per class), ``difficulty`` (the stage every method runs through first:
scores, dropping, strata), ``engine`` (greedy facility location, the papers' methods' greedy),
``matching`` (greedy kernel herding, ``herding``'s), ``methods/`` (one distance per method),
``coreset`` (``Candidates`` and ``select``: from candidates to a ``Manifest``), ``plan`` (what
``select`` would do, for ``--dry-run``).
"""

from prune.selection.budget import BALANCES, class_budgets, exact_fraction, largest_remainder
from prune.selection.coreset import Candidates, check_request, default_difficulty, random_subset, select
from prune.selection.difficulty import DifficultyOptions
from prune.selection.engine import facility_location, split_pool
from prune.selection.methods import DISTANCE_METHODS, METHODS, MethodOptions
from prune.selection.plan import SelectionPlan, plan_selection

__all__ = ["BALANCES", "DISTANCE_METHODS", "METHODS", "Candidates", "DifficultyOptions", "MethodOptions",
           "SelectionPlan", "check_request", "class_budgets", "default_difficulty", "exact_fraction", "facility_location",
           "largest_remainder", "plan_selection", "random_subset", "select", "split_pool"]
