"""Selection: class-balanced budgets, the greedy engine, the methods, and the manifest they produce."""

from prune.selection.coreset import Candidates, SelectionPlan, default_difficulty, plan_selection, select
from prune.selection.difficulty import DifficultyOptions
from prune.selection.methods import FACILITY_LOCATION, METHODS, MethodOptions

__all__ = ["FACILITY_LOCATION", "METHODS", "Candidates", "DifficultyOptions", "MethodOptions", "SelectionPlan",
           "default_difficulty", "plan_selection", "select"]
