"""Class-balanced budgets: exact totals, caps, tie rules, and the errors users see."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prune.errors import PruneError
from prune.selection.budget import class_budgets, largest_remainder

counts_st = st.lists(st.integers(min_value=0, max_value=2000), min_size=1, max_size=12).filter(
    lambda c: sum(c) > 0
)
fraction_st = st.one_of(
    st.floats(min_value=1e-6, max_value=1.0, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.01, 0.05, 0.1, 0.15, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.9, 1.0]),
)


# 1437 examples over 10 classes (the size of an 80% split of sklearn digits; sizes made up)
DIGITS = [143, 146, 142, 146, 145, 146, 145, 143, 139, 142]


def half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(counts_st, fraction_st)
def test_proportional_fraction_properties(counts, fraction):
    f = Fraction(repr(fraction))
    total = half_up(f * sum(counts))
    if total == 0:
        with pytest.raises(PruneError, match="selects 0"):
            class_budgets(counts, fraction=fraction)
        return
    k = class_budgets(counts, fraction=fraction)
    assert sum(k) == total
    for kc, nc in zip(k, counts):
        q = f * nc
        assert 0 <= kc <= nc
        assert math.floor(q) <= kc <= math.floor(q) + 1  # floor plus at most one unit


@settings(max_examples=300, deadline=None)
@given(counts_st, st.data())
def test_proportional_count_properties(counts, data):
    n = sum(counts)
    count = data.draw(st.integers(min_value=1, max_value=n))
    k = class_budgets(counts, count=count)
    assert sum(k) == count
    assert k == largest_remainder(counts, count)
    for kc, nc in zip(k, counts):
        q = Fraction(count * nc, n)
        assert 0 <= kc <= nc and math.floor(q) <= kc <= math.ceil(q)


CAPPED = [0, 199, 471, 471, 471, 471, 471, 471, 134]


def check_equal(counts, count):
    """The properties of ``balance="equal"`` budgets of ``count`` over ``counts``."""
    k = class_budgets(counts, count=count, balance="equal")
    assert sum(k) == count
    assert all(0 <= kc <= nc for kc, nc in zip(k, counts))
    assert all(kc == 0 for kc, nc in zip(k, counts) if nc == 0)
    # near-equal: classes not at their cap differ by at most one, and none is below a capped one
    open_ = [kc for kc, nc in zip(k, counts) if kc < nc]
    if open_:
        assert max(open_) - min(open_) <= 1
        # a full class got at most one more than an open one (one of the single extra units filled it)
        assert all(kc <= min(open_) + 1 for kc in k)
    # the single extra units went to the lowest class ids among the open classes
    if open_ and max(open_) != min(open_):
        level = min(open_)
        got_extra = [c for c, (kc, nc) in enumerate(zip(k, counts)) if kc == level + 1 and nc > level]
        no_extra = [c for c, (kc, nc) in enumerate(zip(k, counts)) if kc == level and nc > level]
        assert max(got_extra) < min(no_extra)


@settings(max_examples=300, deadline=None)
@given(counts_st, st.data())
def test_equal_properties(counts, data):
    nonempty = sum(c > 0 for c in counts)
    check_equal(counts, data.draw(st.integers(min_value=nonempty, max_value=sum(counts))))


def test_equal_properties_where_the_extra_unit_fills_a_class():
    # level 470; class 2 gets the one extra unit and lands exactly on its cap (471)
    assert class_budgets(CAPPED, count=3154, balance="equal") == [0, 199, 471, 470, 470, 470, 470, 470, 134]
    check_equal(CAPPED, 3154)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=10), st.data())
def test_largest_remainder_properties(sizes, data):
    n = sum(sizes)
    total = data.draw(st.integers(min_value=0, max_value=n))
    k = largest_remainder(sizes, total)
    assert sum(k) == total
    assert all(0 <= kc <= nc for kc, nc in zip(k, sizes))
    if n:
        rema = [Fraction(total * s, n) - math.floor(Fraction(total * s, n)) for s in sizes]
        bumped = [c for c in range(len(sizes)) if k[c] > math.floor(Fraction(total * sizes[c], n))]
        kept = [c for c in range(len(sizes)) if c not in bumped]
        for b in bumped:  # every bumped class beats (or ties with a higher id) every kept one
            for c in kept:
                assert rema[b] > rema[c] or (rema[b] == rema[c] and b < c)


# --------------------------------------------------------------------------- worked examples


def test_worked_examples():
    # [5, 3, 2] at f = 0.5: f*n_c = 2.5, 1.5, 1.0 -> floors 2, 1, 1 (4); total round(5) = 5;
    # one unit, fractional parts tie at .5 for classes 0 and 1 -> lower id wins.
    assert class_budgets([5, 3, 2], fraction=0.5) == [3, 1, 1]
    # [1000, 10, 1], count 10: quotas 9.891, 0.0989, 0.0099 -> 9, 0, 0; the unit to class 0.
    assert class_budgets([1000, 10, 1], count=10) == [10, 0, 0]
    # 1437 examples, 10%: 14.3, 14.6, 14.2, 14.6, 14.5, 14.6, 14.5, 14.3, 13.9, 14.2 -> floors
    # 14 x 9 + 13 = 139; total round(143.7) = 144 -> 5 units to .9 (8), .6 (1, 3, 5), .5 (4).
    assert class_budgets(DIGITS, fraction=0.1) == [14, 15, 14, 15, 15, 15, 14, 14, 14, 14]
    # half-up on the decimal the user typed: 0.15 * 10 = 1.5 -> 2 (binary 0.15 is just below)
    assert class_budgets([10], fraction=0.15) == [2]
    assert class_budgets([10], fraction=0.25) == [3]  # 2.5 -> 3 (not banker's 2)
    assert class_budgets([3, 3, 3], fraction=1 / 3) == [1, 1, 1]
    # f = 0.3 over [7, 7, 6]: 2.1, 2.1, 1.8 -> 2, 2, 1 (5); total 6; unit to class 2 (.8).
    assert class_budgets([7, 7, 6], fraction=0.3) == [2, 2, 2]
    # empty classes get nothing
    assert class_budgets([0, 10, 0, 10], fraction=0.5) == [0, 5, 0, 5]
    assert class_budgets([4, 6], fraction=1.0) == [4, 6]
    assert class_budgets([4, 6], count=10) == [4, 6]


def test_equal_worked_examples():
    # [100, 3, 50, 0], 60: level 28 fills 28 + 3 + 28 = 59, one unit left -> class 0.
    assert class_budgets([100, 3, 50, 0], count=60, balance="equal") == [29, 3, 28, 0]
    # 30 over [10, 10, 10] -> 10 each; 10 over [5, 5, 5] -> 4, 3, 3
    assert class_budgets([10, 10, 10], count=30, balance="equal") == [10, 10, 10]
    assert class_budgets([5, 5, 5], count=10, balance="equal") == [4, 3, 3]
    # fraction with equal: 10% of 1000 over [900, 50, 50] -> 34, 33, 33
    assert class_budgets([900, 50, 50], fraction=0.1, balance="equal") == [34, 33, 33]
    # caps: [2, 100, 1], count 50 -> 2, 47, 1
    assert class_budgets([2, 100, 1], count=50, balance="equal") == [2, 47, 1]


def test_largest_remainder_examples():
    assert largest_remainder([1, 1, 1], 2) == [1, 1, 0]  # all .667: lower ids first
    assert largest_remainder([5, 3, 2], 5) == [3, 1, 1]
    assert largest_remainder([0, 0], 0) == [0, 0]
    assert largest_remainder([3, 0, 7], 10) == [3, 0, 7]
    with pytest.raises(ValueError):
        largest_remainder([3, 4], 8)
    with pytest.raises(ValueError):
        largest_remainder([3, -1], 1)


def test_fraction_kinds_are_read_exactly():
    assert class_budgets([10], fraction=Fraction(3, 20)) == [2]
    assert class_budgets([10], fraction=Decimal("0.15")) == [2]
    assert class_budgets([10], fraction="0.15") == [2]
    assert class_budgets([10], fraction=1) == [10]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fraction": 0.0}, r"--fraction must be in \(0, 1\]"),
        ({"fraction": -0.1}, r"--fraction must be in \(0, 1\]"),
        ({"fraction": 1.5}, r"--fraction must be in \(0, 1\]"),
        ({"fraction": math.nan}, "--fraction must be a number"),
        ({"fraction": math.inf}, "--fraction must be a number"),
        ({"fraction": "a lot"}, "--fraction must be a number"),
        ({"fraction": True}, "--fraction must be a number"),
        ({"count": 0}, "--count must be at least 1"),
        ({"count": -3}, "--count must be at least 1"),
        ({"count": 1438}, "--count 1438 exceeds the 1437 examples"),
        ({"count": 2.5}, "--count must be a whole number"),
        ({"fraction": 0.1, "count": 10}, "exactly one of --fraction or --count"),
        ({"fraction": 0.1, "balance": "uniform"}, "unknown --balance 'uniform'"),
        ({"count": 5, "balance": "equal"}, "--balance equal needs at least one example per non-empty class"),
    ],
)
def test_errors(kwargs, match):
    """What the command line prints (the flags); a Python caller reads the parameters' names."""
    digits = DIGITS
    with pytest.raises(PruneError) as err:
        class_budgets(digits, **kwargs)
    assert re.search(match, err.value.cli_message), err.value.cli_message
    assert re.search(match.replace("--", ""), str(err.value)) and "--" not in str(err.value), str(err.value)


def test_zero_selection_message_is_exact():
    digits = DIGITS
    with pytest.raises(PruneError) as err:
        class_budgets(digits, fraction=0.0001)
    assert err.value.cli_message == (
        "--fraction 0.0001 of 1437 examples selects 0; use a larger --fraction or --count"
    )
    assert str(err.value) == "fraction 0.0001 of 1437 examples selects 0; use a larger fraction or count"


def test_no_examples():
    with pytest.raises(PruneError, match="no examples"):
        class_budgets([0, 0], fraction=0.5)
    with pytest.raises(ValueError):
        class_budgets([3, -1], count=1)


def test_hypothesis_writes_nothing_into_the_repository():
    from hypothesis import settings
    from hypothesis.configuration import storage_directory

    hidden = Path(__file__).resolve().parents[1] / ".hypothesis"
    # Under CI (the CI variable set) hypothesis loads its "ci" profile, which keeps no database.
    databases = (settings().database, settings.get_profile("default").database)
    paths = [storage_directory(intent_to_write=False).path]
    paths += [Path(db.path) for db in databases if db is not None]
    for path in paths:
        assert hidden not in (path.resolve(), *path.resolve().parents), path
