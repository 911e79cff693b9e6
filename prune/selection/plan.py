"""The plan of a selection, its first half: budgets, the difficulty stage's parts and the greedy pools.

``select`` builds this plan and then runs it (``prune.selection.run``); ``prune select --dry-run``
prints it instead. With a store (or a method that needs none) the plan holds the exact pools
``select`` runs; without one (features still to be computed) it sizes them before the stage.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch

from prune import random_streams
from prune.selection.budget import Budget, largest_remainder
from prune.selection.coreset import Candidates, difficulty_stage, rows_per_class
from prune.selection.difficulty import Difficulty, DifficultyConfig
from prune.selection.engine import split_pool
from prune.selection.methods import DistanceMethod, Method, MethodConfig

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
    """What ``select`` does, worked out before any distance is computed.

    ``pools[c]`` lists (pool size, budget in it) of class c's greedy runs (None for the sampling
    methods). Memory: what the process holds now (``resident_bytes``: Python, torch, the data, a
    store's labels) plus, when features are still to be computed (``feature_bytes``), what the
    warm-up brings in (``TRAINING_RUNTIME_BYTES``), plus the larger of two peaks: the features twice
    while the store is built, or the distances of the largest pool (selection reads the store a pool
    at a time; a pool's features are small beside its p x p distances). An exact plan also holds
    what ``select`` runs: the method, the stage and each part's pools (``parts``: class, rows, pools).
    """

    dataset: dict
    method: str
    class_sizes: list[int]
    budgets: list[int]
    pools: list[list[tuple[int, int]]] | None
    exact_pools: bool
    feature_bytes: int  # features still to be computed (0 for random, or with a store)
    resident_bytes: int = 0
    runner: Method | None = field(default=None, repr=False)
    stage: Difficulty | None = field(default=None, repr=False)
    parts: list[tuple[int, torch.Tensor, list[tuple[torch.Tensor, int]]]] = field(default_factory=list, repr=False)
    learned: list[int] = field(default_factory=list, repr=False)  # crest: examples dropped as learned, per class

    @property
    def largest_pool(self) -> int:
        return max((size for pools in self.pools or [] for size, _ in pools), default=0)

    @property
    def distance_bytes(self) -> int:
        """The distances of the largest pool at their peak, for any M: the samples are summed into one p x p."""
        if self.pools is None:
            return 0
        return MethodConfig(self.method).method.peak_bytes(self.largest_pool)

    @property
    def memory_bytes(self) -> int:
        training = TRAINING_RUNTIME_BYTES if self.feature_bytes else 0
        return self.resident_bytes + training + max(2 * self.feature_bytes, self.distance_bytes)


def plan_selection(candidates: Candidates, method: MethodConfig, budget: Budget = Budget(), *, seed: int = 0,
                   difficulty: DifficultyConfig | None = None, device: torch.device = torch.device("cpu"),
                   feature_bytes: int = 0) -> SelectionPlan:
    """The budgets, parts and pools of a selection; runs no greedy.

    ``feature_bytes`` is the size of the features when ``candidates`` has no store yet and the
    method or its stage needs one (a dry run); the pools are then sized before the difficulty
    stage and crest's dropping (``exact_pools`` False). ``difficulty`` None: ``method.stage()``.
    """
    cls = method.method
    class_rows = rows_per_class(candidates)
    sizes = [len(rows) for rows in class_rows]
    budgets = budget.per_class(sizes)
    difficulty = difficulty or method.stage()
    summary = dict(dataset=candidates.dataset, method=method.name, class_sizes=sizes, budgets=budgets)
    generator = random_streams.generator(seed, "selection")
    if candidates.store is None and feature_bytes and (cls.needs_features or difficulty.active):
        pools = _sized_pools(class_rows, budgets, method, generator) if issubclass(cls, DistanceMethod) else None
        exact = method.name != "crest" and not difficulty.active
        return SelectionPlan(**summary, pools=pools, exact_pools=exact, feature_bytes=feature_bytes,
                             resident_bytes=resident_bytes())
    stage = difficulty_stage(candidates, method, difficulty)
    runner = cls(candidates.store, method, device)
    parts, learned = [], []
    for c, (rows, k) in enumerate(zip(class_rows, budgets)):
        before = getattr(runner, "dropped", 0)
        for part, part_budget in (stage.split(rows, k, runner.cutoff(k, len(rows))) if stage else [(rows, k)]):
            parts.append((c, part, [(pool, b) for pool, b in runner.pools(part, part_budget, generator) if b]))
        learned.append(getattr(runner, "dropped", 0) - before)
    pools = None
    if isinstance(runner, DistanceMethod):
        pools = [[(len(pool), b) for c2, _, part_pools in parts if c2 == c for pool, b in part_pools]
                 for c in range(len(class_rows))]
    return SelectionPlan(**summary, pools=pools, exact_pools=True, feature_bytes=0, resident_bytes=resident_bytes(),
                         runner=runner, stage=stage, parts=parts, learned=learned)


def _sized_pools(class_rows: list[torch.Tensor], budgets: list[int], method: MethodConfig,
                 generator: torch.Generator) -> list[list[tuple[int, int]]]:
    """(pool size, budget) of each class's greedy runs before the stage: random parts of ``max_pool``
    (crest: ``subset_size``) examples, budgets proportional to their sizes."""
    limit = method.subset_size if method.name == "crest" else method.max_pool
    pools = []
    for rows, k in zip(class_rows, budgets):
        parts = split_pool(rows, limit, generator)
        pools.append([(len(part), b) for part, b in zip(parts, largest_remainder([len(p) for p in parts], k)) if b])
    return pools
