"""The plan of a selection (``prune select --dry-run``): budgets, greedy pools and memory, no greedy run."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prune.errors import PruneError
from prune.selection.budget import class_budgets, largest_remainder
from prune.selection.coreset import Candidates, difficulty_stage, rows_per_class, default_difficulty
from prune.selection.difficulty import DifficultyOptions
from prune.selection.engine import split_pool
from prune.selection.methods import FACILITY_LOCATION, METHODS, SAMPLING, MethodOptions


@dataclass
class SelectionPlan:
    """What ``select`` would do, worked out without computing a distance (``prune select --dry-run``).

    ``pools[c]`` lists (pool size, budget in it) of class c's greedy runs (None for random and
    ccs); with a store they are exactly the pools ``select`` forms with the same seed. Without
    one, pools are sized before the difficulty stage and crest's dropping (``exact_pools`` False).
    """

    dataset: dict
    method: str
    class_sizes: list[int]
    budgets: list[int]
    pools: list[list[tuple[int, int]]] | None
    exact_pools: bool
    feature_bytes: int  # features held in memory during selection (0 for random)

    @property
    def largest_pool(self) -> int:
        return max((size for pools in self.pools or [] for size, _ in pools), default=0)

    @property
    def distance_bytes(self) -> int:
        """The largest distance matrix: p^2 float32 numbers for the largest pool p."""
        return self.largest_pool ** 2 * 4

    @property
    def memory_bytes(self) -> int:
        return self.distance_bytes + self.feature_bytes


def plan_selection(candidates: Candidates, method: str, *, fraction: float | None = None, count: int | None = None,
                   balance: str = "proportional", seed: int = 0, options: MethodOptions = MethodOptions(),
                   difficulty: DifficultyOptions | None = None, device: torch.device = torch.device("cpu"),
                   feature_bytes: int = 0) -> SelectionPlan:
    """The budgets and pools ``select`` would use, checking the same arguments; runs no greedy.

    ``feature_bytes`` is the size of the features when ``candidates`` has no store yet; then
    the pools are sized before the difficulty stage and crest's dropping (``exact_pools`` False).
    """
    if method not in METHODS:
        raise PruneError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    class_rows = rows_per_class(candidates)
    sizes = [len(rows) for rows in class_rows]
    budgets = class_budgets(sizes, fraction=fraction, count=count, balance=balance)
    difficulty = difficulty or default_difficulty(method)
    store = candidates.store
    if method in SAMPLING:
        return SelectionPlan(candidates.dataset, method, sizes, budgets, None, True, 0)
    generator = torch.Generator().manual_seed(seed)  # drawn from in the same order as select()
    if store is not None:
        stage = difficulty_stage(candidates, method, difficulty)
        engine = FACILITY_LOCATION[method](store, options, device)
        pools = [[(len(pool), b) for part, budget in (stage.split(rows, k) if stage else [(rows, k)])
                  for pool, b in engine.pools(part, budget, generator) if b]
                 for rows, k in zip(class_rows, budgets)]
        tensors = (store.labels, store.grad_logit, store.hess_logit, store.embedding, store.grad_logit_ema,
                   store.hess_logit_ema, store.loss_per_epoch, store.grad_logit_point, store.hess_logit_point,
                   store.embedding_point)
        feature_bytes = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    else:
        limit = options.subset_size if method == "crest" else options.max_pool
        pools = []
        for rows, k in zip(class_rows, budgets):
            parts = split_pool(rows, limit, generator)
            pools.append([(len(part), b) for part, b in zip(parts, largest_remainder([len(p) for p in parts], k)) if b])
    exact = store is not None or (method != "crest" and not difficulty.active)
    return SelectionPlan(candidates.dataset, method, sizes, budgets, pools, exact, feature_bytes)
