"""Greedy kernel herding: a subset whose distribution matches its pool's, the engine of ``herding``.

Facility location (``engine.py``) *covers* a pool: it minimises the sum of distances to the
nearest pick, and a quantiser of that kind places its points more evenly than the data lie
(Zador: density rho^(d/(d+1)) instead of rho), so a small budget goes to the sparse, far-apart
examples. Kernel herding *matches* the pool instead. For a kernel k with k(x, x) = 1, greedy
lowers the maximum mean discrepancy between the picks S and the pool V,

    MMD^2(S, V) = mean_{s,s' in S} k(s, s') - 2 mean_{s in S, i in V} k(s, i) + mean_{i,i' in V} k(i, i'),

by adding, at step t + 1 (|S| = t), the point j not yet picked with the largest

    mu_j - (1 / (t + 1)) sum_{s in S} k(j, s),        mu_j = (1/p) sum_{i in V} k(j, i)

(kernel herding, Chen, Welling & Smola, UAI 2010, eq. 4; as greedy MMD minimisation, Bach,
Lacoste-Julien & Obozinski, ICML 2012). Points where the pool is dense (large mu) come first and
points near earlier picks are held back, so the picks follow the pool's density with less
spread than a uniform sample's. Ties go to the lowest pool position.

Kernel: Gaussian on the method's distance with the median heuristic,
k(i, j) = exp(-d(i, j)^2 / (2 m^2)), m the median distance between two different points of the
pool; it has no constant to tune and follows the scale of whatever distance it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["HerdingResult", "kernel_herding", "median_distance"]


@dataclass(frozen=True)
class HerdingResult:
    """order: int64 (k,), pool positions in the order picked; mmd2: MMD^2(S, V) of all k, in float64."""

    order: torch.Tensor
    mmd2: float


def median_distance(distances: torch.Tensor) -> float:
    """The (lower) median of d(i, j) over the pairs i < j (0 for a pool of one)."""
    p = len(distances)
    if p < 2:
        return 0.0
    # Sorted, the whole matrix is its p zeros of the diagonal, then each pair's distance twice
    # (d >= 0, symmetric): the pairs' lower median is entry p + pairs - 1, found with one copy of
    # the matrix (numpy's partition on the CPU; torch's kthvalue, which adds an index array, elsewhere).
    k = p + p * (p - 1) // 2 - 1
    flat = distances.flatten()
    if flat.device.type == "cpu":
        return float(np.partition(flat.numpy(), k)[k])
    return float(flat.kthvalue(k + 1).values)


def gaussian_kernel_(distances: torch.Tensor) -> torch.Tensor:
    """exp(-d^2 / (2 m^2)) in place, m the median distance (all ones when every distance is 0)."""
    scale = median_distance(distances)
    if scale > 0:
        distances.div_(scale).square_().mul_(-0.5).exp_()
    else:
        distances.fill_(1.0)
    return distances


def kernel_herding(kernel: torch.Tensor, k: int) -> HerdingResult:
    """Greedy MMD on a (p, p) symmetric kernel with unit diagonal: k of the p positions."""
    p = len(kernel)
    k = min(k, p)
    mu = kernel.mean(1, dtype=torch.float64)
    near = torch.zeros(p, dtype=torch.float64, device=kernel.device)  # sum_{s in S} k(j, s)
    taken = torch.zeros(p, dtype=torch.bool, device=kernel.device)
    order = torch.empty(k, dtype=torch.int64)
    for t in range(k):
        score = mu - near / (t + 1)
        score.masked_fill_(taken, -torch.inf)
        j = int(score.argmax())  # the first of equal maxima
        order[t] = j
        taken[j] = True
        near += kernel[j].double()
    picked = order.to(kernel.device)
    inner = kernel[picked][:, picked].double().sum() / k**2 if k else torch.zeros((), dtype=torch.float64)
    mmd2 = float(inner - 2 * mu[picked].sum() / max(k, 1) + mu.mean())
    return HerdingResult(order, max(mmd2, 0.0))
