"""Dynamic selection: mini-batch coresets chosen during training, their subset log and its replay."""

from prune.dynamic.loop import (
    DYNAMIC_KINDS, UPDATE_RULES, DynamicConfig, inspect_cli, plan_budget, replay, run_dynamic, state_equal, train_cli,
)

__all__ = ["DYNAMIC_KINDS", "UPDATE_RULES", "DynamicConfig", "inspect_cli", "plan_budget", "replay", "run_dynamic",
           "state_equal", "train_cli"]
