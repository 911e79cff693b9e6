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

Two entry points. ``kernel_herding(gaussian_kernel_(d), k)`` is the plain computation on a full
kernel matrix. ``herd(d, k)``, what ``herding`` runs, gives the same picks from the distances'
upper triangle alone (issue 29), on the CPU in two passes over it and no p x p copy:

- the median by selection within a bracket: a strided sample of the pairs brackets the median's
  rank, one pass counts the pairs below the bracket and gathers those inside, and the exact
  order statistic is taken among those (a bracket that misses falls back to selection over all
  pairs): always the exact lower median;
- the kernel a block of rows at a time in a scratch buffer that stays in cache, each block's row
  and column sums (float64) adding up to mu; ``d`` is left as it is;
- the greedy on one CPU thread (k steps of O(p) each: thousands of small ops, which a second
  intra-op thread only slows on a shared machine, as in ``prune.selection.engine``), each pick's
  kernel row computed from its distances.

On an accelerator ``herd`` mirrors the triangle and runs the plain computation. Every kernel value is the one ``gaussian_kernel_`` computes, op for op; mu is the same sum in
float64 taken in another order (row parts and column parts instead of whole rows), so it can
differ in its last bits, and the picks only where two candidates' float64 scores agree to about
1e-16 (tests/test_matching.py: the same picks as the plain computation and a brute-force greedy).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from prune.selection.engine import _cpu_threads, in_threads

__all__ = ["HerdingResult", "gaussian_kernel_", "herd", "kernel_herding", "median_distance"]

#: entries of one block of rows in the passes over the matrix (1 MiB of float32: it stays in cache)
BLOCK_ENTRIES = 1 << 18
#: pairs in the strided sample that brackets the median; pools of at most BRACKET_MIN pairs select over all pairs
BRACKET_SAMPLE = 1 << 16
BRACKET_MIN = 1 << 20


@dataclass(frozen=True)
class HerdingResult:
    """order: int64 (k,), pool positions in the order picked; mmd2: MMD^2(S, V) of all k, in float64."""

    order: torch.Tensor
    mmd2: float


def _row_blocks(p: int) -> list[tuple[int, int]]:
    rows = max(1, min(p, BLOCK_ENTRIES // max(p, 1)))
    return [(start, min(start + rows, p)) for start in range(0, p, rows)]


def _each_block(matrix: torch.Tensor, work) -> list:
    """``work(start, stop, scratch)`` for every block of rows of the (p, p) ``matrix``; their results, in order.

    ``scratch`` is a float32 buffer of ``BLOCK_ENTRIES`` entries, one per worker. On the CPU the
    blocks are shared out to one Python thread per torch thread, each running torch on one thread
    (as ``prune.selection.methods.distances`` fills the matrix): the ops are small, and one intra-op
    pool would end each in a barrier that stalls whenever another job holds a core.
    """
    blocks = _row_blocks(len(matrix))
    workers = min(torch.get_num_threads(), len(blocks)) if matrix.device.type == "cpu" else 1
    rows = blocks[0][1] if blocks else 0
    results = [None] * len(blocks)

    def run(worker: int) -> None:
        scratch = torch.empty(rows * len(matrix), dtype=torch.float32, device=matrix.device)
        for i in range(worker, len(blocks), workers):
            results[i] = work(*blocks[i], scratch)

    in_threads(run, workers)
    return results


_TRIU = threading.local()


def _strict_upper(n: int) -> tuple[np.ndarray, np.ndarray]:
    """np.triu_indices(n, 1), cached per thread (the square of every block of rows but the last has one size)."""
    cached = getattr(_TRIU, "indices", {})
    _TRIU.indices = cached
    if n not in cached:
        cached[n] = np.triu_indices(n, 1)
    return cached[n]


def _pairs_of_block(block: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """d(i, j) for i in start..stop-1 and j > i, from the block of rows ``block`` = d[start:stop, start:]."""
    n = stop - start
    square = block[:, :n]
    upper = torch.ones(n, n, dtype=torch.bool, device=block.device).triu(1)
    return torch.cat([square[upper], block[:, n:].reshape(-1)])


def median_distance(distances: torch.Tensor) -> float:
    """The (lower) median of d(i, j) over the pairs i < j (0 for a pool of one); reads the upper triangle only."""
    p = len(distances)
    if p < 2:
        return 0.0
    pairs = p * (p - 1) // 2
    k = (pairs - 1) // 2
    if distances.device.type == "cpu" and pairs > BRACKET_MIN:
        found = _bracketed(distances.numpy(), k)
        if found is not None:
            return found
    values = torch.cat([_pairs_of_block(distances[start:stop, start:], start, stop) for start, stop in _row_blocks(p)])
    if values.device.type == "cpu":
        return float(np.partition(values.numpy(), k)[k])
    return float(values.kthvalue(k + 1).values)


def _bracketed(d: np.ndarray, k: int) -> float | None:
    """The k-th smallest (0-based) pair distance d(i, j), i < j, from a bracket [lo, hi]; None if it misses.

    The bracket comes from a sample of the pairs, every s-th entry of every row's strictly upper
    part (from a row-dependent offset, so each pair is about equally likely, and every row, not a
    few, is represented: the entries of one row are correlated). lo and hi sit six standard
    deviations of a sample rank (sqrt(n)/2 for n pairs sampled) on either side of rank k's place,
    then 48 if that misses. One pass counts the pairs below lo and gathers those in [lo, hi]; if
    rank k falls among the gathered ones, the answer is their (k - below)-th smallest. Whether the
    bracket holds is checked, not assumed.
    """
    p = len(d)
    pairs = p * (p - 1) // 2
    stride = max(1, pairs // BRACKET_SAMPLE)
    sample = np.sort(np.concatenate([d[i, i + 1 + (i * 7919) % stride :: stride] for i in range(p - 1)]))
    n = len(sample)
    at = k / max(pairs - 1, 1) * (n - 1)
    for sigmas in (6, 48):
        margin = sigmas * math.sqrt(n) / 2 + 2
        lo = sample[max(0, math.floor(at - margin))]
        hi = sample[min(n - 1, math.ceil(at + margin))]

        def work(start: int, stop: int, scratch, lo=lo, hi=hi):
            square = d[start:stop, start:stop][_strict_upper(stop - start)]
            rest = d[start:stop, stop:]
            below = np.count_nonzero(square < lo) + np.count_nonzero(rest < lo)
            return below, np.concatenate([square[(square >= lo) & (square <= hi)], rest[(rest >= lo) & (rest <= hi)]])

        counted = _each_block(torch.from_numpy(d), work)
        below = sum(count for count, _ in counted)
        inside = np.concatenate([gathered for _, gathered in counted])
        if below <= k < below + len(inside):
            return float(np.partition(inside, k - below)[k - below])
    return None


def _kernel_(block: torch.Tensor, scale: float) -> torch.Tensor:
    """exp(-d^2 / (2 scale^2)) in place (all ones when scale is 0)."""
    if scale > 0:
        return block.div_(scale).square_().mul_(-0.5).exp_()
    return block.fill_(1.0)


def gaussian_kernel_(distances: torch.Tensor) -> torch.Tensor:
    """exp(-d^2 / (2 m^2)) in place, m the median distance (all ones when every distance is 0)."""
    return _kernel_(distances, median_distance(distances))


def kernel_herding(kernel: torch.Tensor, k: int) -> HerdingResult:
    """Greedy MMD on a (p, p) symmetric kernel with unit diagonal: k of the p positions."""
    return _greedy(lambda j: kernel[j], lambda picked: kernel[picked][:, picked], kernel.mean(1, dtype=torch.float64),
                   k, kernel.device)


def herd(distances: torch.Tensor, k: int) -> HerdingResult:
    """``kernel_herding(gaussian_kernel_(distances), k)`` from the upper triangle of the symmetric ``distances``.

    Only the entries on and above the diagonal are read (``prune.selection.methods.distances``
    can leave the others unwritten); ``distances`` is not modified. See the module docstring.
    """
    p = len(distances)
    if distances.device.type != "cpu":
        return _herd_mirrored(distances, k)
    scale = median_distance(distances)

    def sums(start: int, stop: int, scratch: torch.Tensor):
        block = distances[start:stop, start:]
        kernel = scratch[: block.numel()].view(block.shape)
        if scale > 0:  # _kernel_, its first op writing to the scratch buffer
            torch.div(block, scale, out=kernel).square_().mul_(-0.5).exp_()
        else:
            kernel.fill_(1.0)
        n = stop - start
        square, rest = kernel[:, :n], kernel[:, n:]
        square = square.triu() + square.triu(1).T  # its entries below the diagonal, from the upper triangle
        return square.sum(1, dtype=torch.float64) + rest.sum(1, dtype=torch.float64), rest.sum(0, dtype=torch.float64)

    blocks = _row_blocks(p)
    mu = torch.zeros(p, dtype=torch.float64)
    for (start, stop), (rows, columns) in zip(blocks, _each_block(distances, sums)):
        mu[start:stop] += rows
        mu[stop:] += columns  # k(i, j) for the rows i of this block and every j below it
    mu /= p

    def row(j: int) -> torch.Tensor:  # k(j, .): d(i, j) for i < j is entry (i, j) of the upper triangle
        return _kernel_(torch.cat([distances[:j, j], distances[j, j:]]), scale)

    def square(picked: torch.Tensor) -> torch.Tensor:
        among = distances[picked][:, picked]
        return _kernel_(torch.where(picked[:, None] <= picked[None, :], among, among.T), scale)

    return _greedy(row, square, mu, k, distances.device)


def _herd_mirrored(distances: torch.Tensor, k: int) -> HerdingResult:
    """``herd`` on an accelerator: the plain computation on the mirrored upper triangle (a new matrix)."""
    full = distances.triu()
    full += distances.triu(1).T
    return kernel_herding(gaussian_kernel_(full), k)


def _greedy(row, square, mu: torch.Tensor, k: int, device: torch.device) -> HerdingResult:
    """k steps of kernel herding given each point's kernel row (``row(j)``), the kernel among a set of
    positions (``square(picked)``) and the rows' float64 means mu."""
    p = len(mu)
    k = min(k, p)
    order = torch.empty(k, dtype=torch.int64)
    with _cpu_threads(device):
        # near_j = sum_{s in S} k(j, s); a pick's entry is set to +inf, so its score is -inf from then on
        near = torch.zeros(p, dtype=torch.float64, device=device)
        score = torch.empty_like(near)
        for t in range(k):
            torch.div(near, t + 1, out=score)
            torch.sub(mu, score, out=score)
            j = int(score.argmax())  # the first of equal maxima
            order[t] = j
            near.add_(row(j))  # in float64, each float32 kernel value exactly
            near[j] = math.inf
        picked = order.to(device)
        inner = square(picked).double().sum() / k**2 if k else torch.zeros((), dtype=torch.float64)
        mmd2 = float(inner - 2 * mu[picked].sum() / max(k, 1) + mu.mean())
    return HerdingResult(order, max(mmd2, 0.0))
