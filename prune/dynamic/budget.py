"""The backprop budget of a dynamic run: B = round(f n E) examples, split over epochs and steps.

``fraction`` f is the fraction of full-data back-propagations: over the run exactly
B = round(f * n * epochs) examples are back-propagated (``prune.dynamic.loop`` has the rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from prune.errors import PruneError
from prune.selection import exact_fraction


@dataclass(frozen=True)
class Budget:
    """Backprops of the whole run and the step sizes of every epoch."""

    backprops: int
    epoch_backprops: list[int]
    epoch_sizes: list[list[int]]   # the batch size of every step, per epoch

    @property
    def steps(self) -> int:
        return sum(len(s) for s in self.epoch_sizes)

    def to_dict(self, fraction, n: int, batch_size: int) -> dict:
        return {"fraction": fraction, "num_examples": n, "epochs": len(self.epoch_sizes), "batch_size": batch_size,
                "backprops": self.backprops, "steps": self.steps, "epoch_backprops": self.epoch_backprops,
                "epoch_steps": [len(s) for s in self.epoch_sizes],
                "rule": "backprops = round(fraction * num_examples * epochs), rounded half up; "
                        "epoch e gets floor(e B / E) - floor((e - 1) B / E)"}


def plan_budget(fraction, n: int, epochs: int, batch_size: int) -> Budget:
    """B = round(f n E) backprops, split over epochs and into steps of at most ``batch_size``."""
    f = exact_fraction(fraction)
    if not 0 < f <= 1:
        raise PruneError(f"--fraction must be in (0, 1], got {fraction}", parameters=True)
    if f * n < 1:
        raise PruneError(f"--fraction {fraction} of {n} examples is less than one backprop per epoch; "
                         "use a larger --fraction", parameters=True)
    total = math.floor(f * n * epochs + Fraction(1, 2))
    per_epoch = [total * e // epochs - total * (e - 1) // epochs for e in range(1, epochs + 1)]
    sizes = []
    for b in per_epoch:
        steps = [batch_size] * (b // batch_size) + ([b % batch_size] if b % batch_size else [])
        if len(steps) >= 2 and steps[-1] == 1:  # never a step of one example (BatchNorm cannot train on it)
            pair = steps[-2] + 1
            steps[-2:] = [pair - pair // 2, pair // 2]
        sizes.append(steps)
    assert sum(map(sum, sizes)) == total
    return Budget(total, per_epoch, sizes)
