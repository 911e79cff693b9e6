"""Selection: class-balanced budgets, the greedy engine, the methods, and the manifest they produce."""

from prune.selection.coreset import Candidates, SelectionPlan, plan_selection, select
from prune.selection.methods import FACILITY_LOCATION, METHODS, MethodOptions

__all__ = ["FACILITY_LOCATION", "METHODS", "Candidates", "MethodOptions", "SelectionPlan", "plan_selection", "select"]
