"""Kernel herding (prune.selection.matching) against a brute-force greedy MMD, and the herding method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prune.selection import matching
from prune.selection.engine import facility_location
from prune.selection.matching import gaussian_kernel_, herd, kernel_herding, median_distance


def mmd2(K: np.ndarray, subset: list[int]) -> float:
    """MMD^2 between the uniform distribution on ``subset`` and on every point, straight from its definition."""
    s = np.array(subset)
    return K[np.ix_(s, s)].mean() - 2 * K[s].mean() + K.mean()


def brute_force(K: np.ndarray, k: int) -> list[int]:
    """Greedy: add the point whose addition gives the smallest MMD^2 (lowest position on ties)."""
    chosen: list[int] = []
    for _ in range(k):
        values = [(mmd2(K, chosen + [j]), j) for j in range(len(K)) if j not in chosen]
        chosen.append(min(values)[1])
    return chosen


def points(seed: int, p: int = 30, d: int = 3) -> torch.Tensor:
    return torch.randn(p, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("seed", range(5))
def test_herding_is_greedy_mmd_and_reports_its_mmd(seed):
    x = points(seed)
    K = gaussian_kernel_(torch.cdist(x, x))
    result = kernel_herding(K, 8)
    assert result.order.tolist() == brute_force(K.numpy(), 8)
    assert result.mmd2 == pytest.approx(mmd2(K.numpy(), result.order.tolist()), rel=1e-9, abs=1e-12)


def test_kernel_is_gaussian_with_the_median_distance():
    x = points(0, p=9)
    d = torch.cdist(x, x)
    pairs = np.sort(d.numpy()[np.triu_indices(9, 1)])
    m = pairs[(len(pairs) - 1) // 2]  # the lower median of the 36 pairs
    assert median_distance(d) == pytest.approx(m)
    np.testing.assert_allclose(gaussian_kernel_(d.clone()).numpy(), np.exp(-d.numpy() ** 2 / (2 * m**2)), rtol=1e-12)
    assert (gaussian_kernel_(torch.zeros(3, 3)) == 1).all()  # identical points: one kernel value
    assert median_distance(torch.zeros(1, 1)) == 0.0


def test_herding_follows_density_where_facility_location_covers_outliers():
    """90 points in a tight cluster, 10 far apart: a budget of 10 should be mostly cluster (as
    uniform sampling would be, 9 of 10), not mostly outliers (facility location)."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(90, 2, generator=g, dtype=torch.float64) * 0.1,
                   torch.randn(10, 2, generator=g, dtype=torch.float64) * 10])
    d = torch.cdist(x, x)
    herded = kernel_herding(gaussian_kernel_(d.clone()), 10).order
    covered = facility_location(d.float(), 10).order
    assert (herded < 90).sum() >= 8
    assert (covered >= 90).sum() >= 5


def test_herding_takes_every_point_when_the_budget_is_the_pool():
    x = points(1, p=6)
    result = kernel_herding(gaussian_kernel_(torch.cdist(x, x)), 6)
    assert sorted(result.order.tolist()) == list(range(6))
    assert result.mmd2 == pytest.approx(0.0, abs=1e-12)


# herd: the same greedy from the upper triangle alone (issue 29)

def distance_matrix(seed: int, p: int, d: int = 3, levels: int = 0) -> torch.Tensor:
    """float32 Euclidean distances of p random points, exactly symmetric; ``levels``: rounded to so many values."""
    x = points(seed, p, d)
    dist = torch.cdist(x, x)
    if levels:
        dist = (dist / dist.max() * levels).round()
    dist = dist.float()
    dist = dist.triu() + dist.triu(1).T
    return dist.fill_diagonal_(0)


def lower_garbage(d: torch.Tensor) -> torch.Tensor:
    """``d`` with NaN below the diagonal: what herd may not read."""
    return d.masked_fill(torch.ones_like(d, dtype=torch.bool).tril(-1), float("nan"))


@pytest.mark.parametrize("seed", range(5))
def test_herd_is_greedy_mmd_from_the_upper_triangle(seed):
    d = distance_matrix(seed, 30)
    upper = lower_garbage(d)
    kept = upper.clone()
    result = herd(upper, 8)
    K = gaussian_kernel_(d.double().clone())
    assert result.order.tolist() == brute_force(K.numpy(), 8)
    assert result.mmd2 == pytest.approx(mmd2(K.numpy(), result.order.tolist()), rel=1e-5, abs=1e-9)
    assert torch.equal(upper.isnan(), kept.isnan()) and torch.equal(upper.nan_to_num(), kept.nan_to_num())  # untouched


@pytest.mark.parametrize("p, levels, k", [(1600, 0, 80), (1600, 7, 80), (2100, 0, 300), (40, 0, 40), (2, 0, 1),
                                          (1, 0, 1)])
def test_herd_picks_what_kernel_herding_picks(p, levels, k):
    """Large pools (the median's bracket), ties (a few distinct distances), every point, tiny pools."""
    d = distance_matrix(p + levels, p, levels=levels)
    plain = kernel_herding(gaussian_kernel_(d.clone()), k)
    fast = herd(lower_garbage(d), k)
    assert fast.order.tolist() == plain.order.tolist()
    assert fast.mmd2 == pytest.approx(plain.mmd2, rel=1e-9, abs=1e-12)
    mirrored = matching._herd_mirrored(lower_garbage(d), k)  # herd's path on an accelerator
    assert mirrored.order.tolist() == plain.order.tolist() and mirrored.mmd2 == plain.mmd2


@pytest.mark.parametrize("levels", [0, 3, 1000])
def test_median_is_the_exact_lower_median_of_the_pairs(levels, monkeypatch):
    d = distance_matrix(levels, 1500, levels=levels)  # 1,124,250 pairs: above BRACKET_MIN
    pairs = np.sort(d.numpy()[np.triu_indices(1500, 1)])
    want = pairs[(len(pairs) - 1) // 2]
    assert median_distance(lower_garbage(d)) == want
    monkeypatch.setattr(matching, "_bracketed", lambda *a: None)  # the bracket missed: selection over all pairs
    assert median_distance(lower_garbage(d)) == want
    monkeypatch.undo()
    monkeypatch.setattr(matching, "BRACKET_SAMPLE", 8)  # a sample too small to bracket well: still exact
    assert median_distance(lower_garbage(d)) == want


def test_upper_distances_are_the_upper_triangle_of_the_full_ones():
    from prune.selection.methods.distances import expected_last_layer

    g = torch.Generator().manual_seed(0)
    grad, h = torch.randn(300, 3, 5, generator=g), torch.randn(300, 3, 7, generator=g)
    full = expected_last_layer(grad, h, torch.empty(300, 3, 0), 0.0)
    buffer = torch.full((400 * 400,), float("nan"))
    upper = expected_last_layer(grad, h, torch.empty(300, 3, 0), 0.0, upper=True, out=buffer)
    assert upper.data_ptr() == buffer.data_ptr()
    assert torch.equal(upper.triu(), full.triu())
    assert herd(upper, 30).order.tolist() == kernel_herding(gaussian_kernel_(full.clone()), 30).order.tolist()
