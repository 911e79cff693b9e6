"""Class-balanced budgets (methods.md, "Budgets"), in exact integer / Fraction arithmetic.

``--fraction f`` or ``--count k`` over classes of sizes n_1..n_C (n = sum n_c):

* total = k, or round(f * n) rounded half up, computed exactly. A float fraction is read by its
  shortest decimal repr (``Fraction(repr(f))``), i.e. as the user typed it: ``--fraction 0.15``
  of 10 examples is 1.5 -> 2, where the binary double 0.1499999999999999944... would give 1.
* ``balance="proportional"`` (default): k_c = floor(f n_c), then the remaining units go to the
  largest fractional parts of f n_c (ties: lower class id). With ``count``, f = count / n. The
  total is exact and k_c <= n_c always (a unit only goes to a class with a positive fractional
  part, where floor(f n_c) < f n_c <= n_c).
* ``balance="equal"``: every non-empty class gets the same count L, capped at n_c, leftovers
  redistributed to the classes with room (water-filling: L is the largest level with
  sum_c min(n_c, L) <= total), then the last single units to the lowest class ids with room.
  Empty classes get 0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from prune.errors import PruneError

__all__ = ["BALANCES", "Budget", "class_budgets", "equal_split", "exact_fraction", "largest_remainder"]

BALANCES = ("proportional", "equal")


@dataclass(frozen=True)
class Budget:
    """How many examples to keep: a ``fraction`` of the training split or a ``count`` (not both;
    neither: 10 %), spread over the classes by ``balance`` (``class_budgets``)."""

    fraction: float | None = None
    count: int | None = None
    balance: str = "proportional"

    def __post_init__(self):
        if self.fraction is None and self.count is None:
            object.__setattr__(self, "fraction", 0.1)
        if self.fraction is not None and self.count is not None:
            raise PruneError("give exactly one of --fraction or --count (both given)", parameters=True)
        if self.fraction is not None and not 0 < exact_fraction(self.fraction) <= 1:
            raise PruneError(f"--fraction must be in (0, 1], got {self.fraction}; e.g. --fraction 0.1 keeps 10%",
                             parameters=True)
        if self.count is not None:
            if isinstance(self.count, bool) or not isinstance(self.count, numbers.Integral):
                raise PruneError(f"--count must be a whole number, got {self.count!r}", parameters=True)
            if self.count <= 0:
                raise PruneError(f"--count must be at least 1, got {self.count}", parameters=True)
        if self.balance not in BALANCES:
            raise PruneError(f"unknown --balance {self.balance!r}; use one of: {', '.join(BALANCES)}", parameters=True)

    def per_class(self, class_counts: Sequence[int]) -> list[int]:
        """k_c of every class: sum(k_c) is the count, or f * n rounded half up (the rules above).

        Raises PruneError, with a one-line fix, for a budget these classes cannot give.
        """
        sizes = _check_sizes(class_counts)
        n = sum(sizes)
        if n == 0:
            raise PruneError("there are no examples to select from; check the dataset and its labels", parameters=True)
        if self.fraction is not None:
            f = exact_fraction(self.fraction)
            total = math.floor(f * n + Fraction(1, 2))  # round half up, exactly
            if total == 0:
                raise PruneError(f"--fraction {self.fraction} of {n} examples selects 0; use a larger --fraction or "
                                 "--count", parameters=True)
        else:
            if self.count > n:
                raise PruneError(f"--count {self.count} exceeds the {n} examples; use --count at most {n} or a "
                                 "--fraction", parameters=True)
            total, f = int(self.count), Fraction(int(self.count), n)
        if self.balance == "equal":
            nonempty = sum(1 for s in sizes if s > 0)
            if total < nonempty:
                raise PruneError(
                    f"--balance equal needs at least one example per non-empty class, but the budget "
                    f"is {total} for {nonempty} classes; raise the budget or use --balance proportional",
                    parameters=True)
            return equal_split(sizes, total)
        return _apportion([f * s for s in sizes], total)

    def to_dict(self, selected: int) -> dict:
        """The manifest's ``budget`` record, ``selected`` the examples kept."""
        return {"fraction": self.fraction, "count": selected, "balance": self.balance}


def _apportion(quotas: Sequence[Fraction], total: int) -> list[int]:
    """floor of each quota, then the remaining units to the largest fractional parts (ties: lower index)."""
    base = [math.floor(q) for q in quotas]
    units = total - sum(base)
    if units < 0 or units > len(quotas):
        raise AssertionError(f"cannot apportion {total} over quotas summing to {sum(quotas)}")
    by_remainder = sorted(range(len(quotas)), key=lambda c: (-(quotas[c] - base[c]), c))
    for c in by_remainder[:units]:
        base[c] += 1
    return base


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    out = []
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"class sizes must be non-negative integers, got {s!r}")
        out.append(int(s))
    return out


def largest_remainder(sizes: Sequence[int], total: int) -> list[int]:
    """Split ``total`` over groups in proportion to ``sizes`` (Hamilton / largest remainder).

    Each group gets floor(total * n_c / n), the remaining units go to the largest fractional
    parts (ties: lower index). The result sums to ``total`` and never exceeds n_c.
    """
    sizes = _check_sizes(sizes)
    n = sum(sizes)
    if isinstance(total, bool) or not isinstance(total, numbers.Integral) or not 0 <= total <= n:
        raise ValueError(f"total must be an integer in [0, {n}], got {total!r}")
    if n == 0:
        return [0] * len(sizes)
    return _apportion([Fraction(int(total) * s, n) for s in sizes], int(total))


def exact_fraction(fraction) -> Fraction:
    """``--fraction`` as an exact ``Fraction``, a float read as its shortest decimal; ``PruneError`` if not a number."""
    if isinstance(fraction, bool):
        raise PruneError(f"--fraction must be a number in (0, 1], got {fraction!r}", parameters=True)
    if isinstance(fraction, Fraction):
        return fraction
    if isinstance(fraction, numbers.Integral):
        return Fraction(int(fraction))
    if isinstance(fraction, Decimal):
        if not fraction.is_finite():
            raise PruneError(f"--fraction must be a number in (0, 1], got {fraction}", parameters=True)
        return Fraction(fraction)
    if isinstance(fraction, numbers.Real):
        value = float(fraction)
        if not math.isfinite(value):
            raise PruneError(f"--fraction must be a number in (0, 1], got {fraction}", parameters=True)
        return Fraction(repr(value))  # the shortest decimal that reads back as this float
    if isinstance(fraction, str):
        try:
            return Fraction(fraction.strip())
        except (ValueError, ZeroDivisionError):
            raise PruneError(f"--fraction must be a number in (0, 1], got {fraction!r}", parameters=True) from None
    raise PruneError(f"--fraction must be a number in (0, 1], got {fraction!r}", parameters=True)


def equal_split(sizes: list[int], total: int) -> list[int]:
    """Water-filling: largest level L with sum min(n_c, L) <= total, then +1 to lowest ids with room.

    ``balance="equal"`` over classes, and the difficulty stage's budgets over strata (CCS Alg. 1).
    """
    lo, hi = 0, max(sizes)
    while lo < hi:  # largest L in [0, max n_c] with filled(L) <= total
        mid = (lo + hi + 1) // 2
        if sum(min(s, mid) for s in sizes) <= total:
            lo = mid
        else:
            hi = mid - 1
    out = [min(s, lo) for s in sizes]
    left = total - sum(out)
    for c, s in enumerate(sizes):
        if left == 0:
            break
        if out[c] < s:
            out[c] += 1
            left -= 1
    return out


def class_budgets(class_counts: Sequence[int], *, fraction: float | None = None, count: int | None = None,
                  balance: str = "proportional") -> list[int]:
    """Per-class selection counts for a fraction or a count (neither: 10 %): ``Budget(...).per_class``."""
    return Budget(fraction, count, balance).per_class(class_counts)
