"""Kernel herding (prune.selection.matching) against a brute-force greedy MMD, and the herding method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prune.selection.engine import facility_location
from prune.selection.matching import gaussian_kernel_, kernel_herding, median_distance


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
