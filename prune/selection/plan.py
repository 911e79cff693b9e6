"""The plan of a selection (``prune select --dry-run``): budgets, greedy pools and memory, no greedy run."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

from prune import random_streams
from prune.errors import PruneError
from prune.selection.budget import class_budgets, largest_remainder
from prune.selection.coreset import Candidates, difficulty_stage, rows_per_class, default_difficulty
from prune.selection.difficulty import DifficultyOptions
from prune.selection.engine import split_pool
from prune.selection.methods import DISTANCE_METHODS, METHODS, SAMPLING, MethodOptions


# torch code and buffers the first backward pass and SGD step bring into memory (measured on CPU,
# torch 2: 160 MB, whatever the model's size); a plan that computes features runs a warm-up.
TRAINING_RUNTIME_BYTES = 160 * 2 ** 20


def resident_bytes() -> int:
    """This process's resident memory now (Linux); elsewhere its peak so far."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class SelectionPlan:
    """What ``select`` would do, worked out without computing a distance (``prune select --dry-run``).

    ``pools[c]`` lists (pool size, budget in it) of class c's greedy runs (None for random and
    ccs); with a store they are exactly the pools ``select`` forms with the same seed. Without
    one, pools are sized before the difficulty stage and crest's dropping (``exact_pools`` False).
    Memory: what the process holds now (``resident_bytes``: Python, torch, the data, a store's
    labels) plus, when features are still to be computed (``feature_bytes``), what the warm-up
    brings in (``TRAINING_RUNTIME_BYTES``), plus the larger of two peaks: the features twice while
    the store is built (the warm-up's results and the work arrays), or the distances of the
    largest pool (selection reads the store a pool at a time; a pool's features are small beside
    its p x p distances).
    """

    dataset: dict
    method: str
    class_sizes: list[int]
    budgets: list[int]
    pools: list[list[tuple[int, int]]] | None
    exact_pools: bool
    feature_bytes: int  # features still to be computed (0 for random, or with a store)
    resident_bytes: int = 0

    @property
    def largest_pool(self) -> int:
        return max((size for pools in self.pools or [] for size, _ in pools), default=0)

    @property
    def distance_bytes(self) -> int:
        """The distances of the largest pool at their peak (``distances.peak_bytes``), for any M: the
        posterior samples are summed into the one p x p result."""
        if self.pools is None:
            return 0
        return DISTANCE_METHODS[self.method].peak_bytes(self.largest_pool)

    @property
    def memory_bytes(self) -> int:
        training = TRAINING_RUNTIME_BYTES if self.feature_bytes else 0
        return self.resident_bytes + training + max(2 * self.feature_bytes, self.distance_bytes)


def plan_selection(candidates: Candidates, method: str, *, fraction: float | None = None, count: int | None = None,
                   balance: str = "proportional", seed: int = 0, options: MethodOptions = MethodOptions(),
                   difficulty: DifficultyOptions | None = None, device: torch.device = torch.device("cpu"),
                   feature_bytes: int = 0) -> SelectionPlan:
    """The budgets and pools ``select`` would use, checking the same arguments; runs no greedy.

    ``feature_bytes`` is the size of the features when ``candidates`` has no store yet; then the
    pools are sized before the difficulty stage and crest's dropping (``exact_pools`` False).
    """
    if method not in METHODS:
        raise PruneError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    class_rows = rows_per_class(candidates)
    sizes = [len(rows) for rows in class_rows]
    budgets = class_budgets(sizes, fraction=fraction, count=count, balance=balance)
    difficulty = difficulty or default_difficulty(method)
    store = candidates.store
    if method in SAMPLING:
        return SelectionPlan(candidates.dataset, method, sizes, budgets, None, True, feature_bytes, resident_bytes())
    generator = random_streams.generator(seed, "selection")  # drawn from in the same order as select()
    if store is not None:
        stage = difficulty_stage(candidates, method, difficulty)
        engine = DISTANCE_METHODS[method](store, options, device)
        pools = [[(len(pool), b) for part, budget in (stage.split(rows, k) if stage else [(rows, k)])
                  for pool, b in engine.pools(part, budget, generator) if b]
                 for rows, k in zip(class_rows, budgets)]
        feature_bytes = 0  # computed already: read a pool at a time
    else:
        limit = options.subset_size if method == "crest" else options.max_pool
        pools = []
        for rows, k in zip(class_rows, budgets):
            parts = split_pool(rows, limit, generator)
            pools.append([(len(part), b) for part, b in zip(parts, largest_remainder([len(p) for p in parts], k)) if b])
    exact = store is not None or (method != "crest" and not difficulty.active)
    return SelectionPlan(candidates.dataset, method, sizes, budgets, pools, exact, feature_bytes, resident_bytes())
