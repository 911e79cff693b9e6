"""The one greedy facility-location engine every distance-based method shares.

Objective (methods.md, "Facility location"): for a pool V of p points and a distance d,

    F(S) = sum_{i in V} max_{j in S} (D - d(i, j)),    D = max_{i,j} d(i, j),

with F(empty) = 0 (the running "current max" starts at 0). prune reports F under exactly this
definition; other engines optimise other similarities (apricot/CORDS: D^2 - d^2, submodlib:
exp(-d/dim), ...), so compare with them only after re-evaluating under this one.

Greedy adds, k times, the candidate with the largest marginal gain, ties broken by the lowest
pool position. With m_i = min(D, min_{s in S} d(i, s)) the marginal gain of j is

    gain(j) = sum_i max(m_i - d(i, j), 0),

which needs neither a similarity matrix nor any subtraction from D, so it is computed straight
from ``distances`` (no p x p copy when they are float32 or float64 already).

Lazy greedy, vectorised. By submodularity a gain computed earlier (for a larger m) is an upper
bound of the gain now. A heap orders the candidates by (bound, lowest pool position); each step
pops a batch of the top stale bounds, re-evaluates them exactly in one tensor op and pushes the
gains back, until the top of the heap is exact for this step: it then beats every remaining
bound, or ties it from a lower position, and is accepted. Every gain is computed by the same
elementwise ``clamp(m - row, min=0).sum()`` reduction, and a decrease of m can only decrease each
rounded term and hence each rounded sum, so stale bounds stay valid bounds *in floating point
too*: the result is exactly the set and order of the naive O(p^2 k) greedy evaluated with the
same arithmetic. On CUDA, where a reduction's summation order may depend on the launch shape,
every evaluation uses one fixed batch shape so that identical columns always get identical gains.

Precision: float64 distances are used in float64, anything else in float32. Versus a float64
reference the picks can only differ where two gains agree to float32 rounding (~1e-7 relative).
The reported ``gains`` and ``objective`` are recomputed in float64 from the chosen points.

``distances`` must be symmetric (as every prune distance is, mathematically); row j is read as
d(., j), which keeps the hot loop on contiguous memory. For a matrix that is symmetric only up to
rounding (e.g. from ``torch.cdist``) this is d(i, j) := distances[j, i].
"""

from __future__ import annotations

import heapq
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch

__all__ = ["FacilityLocationResult", "facility_location", "split_pool"]

# Rows re-evaluated per lazy round. CPU: row sums are computed one row at a time, identically
# for any batch, so the batch can adapt: it starts small and doubles while a step goes on, up to
# a limit (a bigger batch spills out of cache and reads slower); CUDA: one fixed shape (see the
# module docstring).
_CPU_FIRST_BATCH = 8
_CPU_BATCH_MAX = 128
_CUDA_BATCH = 256
# Rows per block when scanning the whole matrix (initial gains, weights).
_SCAN_ROWS = 256
# torch CPU threads while selecting (None: leave torch's setting alone); see _cpu_threads.
CPU_THREADS: int | None = 1


@dataclass(frozen=True)
class FacilityLocationResult:
    """What greedy picked.

    order:     int64 (k,), pool positions 0..p-1 in the order greedy picked them.
    gains:     float64 (k,), marginal gain of each pick (F of the first t picks = gains[:t].sum()).
    weights:   int64 (k,), gamma_j = number of pool points whose nearest selected point is
               order[j] (ties: the selected point with the lowest pool position); sums to p.
    objective: F(S) in float64, with D = distances.max().
    """

    order: torch.Tensor
    gains: torch.Tensor
    weights: torch.Tensor
    objective: float


def _fixed_batch(device: torch.device) -> int | None:
    """Rows per gain evaluation, fixed for the whole run (CUDA), or None to adapt (CPU)."""
    return _CUDA_BATCH if device.type == "cuda" else None


def _empty_result(device: torch.device) -> FacilityLocationResult:
    return FacilityLocationResult(
        order=torch.empty(0, dtype=torch.int64, device=device),
        gains=torch.empty(0, dtype=torch.float64, device=device),
        weights=torch.empty(0, dtype=torch.int64, device=device),
        objective=0.0,
    )


class _GainEvaluator:
    """gain(j) = sum_i relu(m_i - W[j, i]) for batches of rows j, always by the same reduction."""

    def __init__(self, W: torch.Tensor, fixed_batch: int | None):
        self.W = W
        self.fixed = fixed_batch
        self._buf: torch.Tensor | None = None

    def __call__(self, rows: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        b = rows.numel()
        if self.fixed is not None:
            if b > self.fixed:
                return torch.cat(
                    [self(rows[i : i + self.fixed], m) for i in range(0, b, self.fixed)]
                )
            if b < self.fixed:  # pad by repeating the first row: same shape every call
                rows = torch.cat([rows, rows[:1].expand(self.fixed - b)])
        n = rows.numel()
        if self._buf is None or self._buf.shape[0] < n:
            self._buf = torch.empty((n, self.W.shape[1]), dtype=self.W.dtype, device=self.W.device)
        buf = self._buf[:n]
        torch.index_select(self.W, 0, rows, out=buf)
        torch.sub(m, buf, out=buf)
        buf.clamp_(min=0)
        return buf.sum(dim=1)[:b]

    def release(self) -> None:
        self._buf = None


def facility_location(distances: torch.Tensor, k: int) -> FacilityLocationResult:
    """Greedy facility location over a dense (p, p) distance matrix, computed on its device.

    Returns exactly the picks of the naive greedy (largest marginal gain, ties to the lowest
    pool position) in the same arithmetic, found by vectorised lazy greedy. If all distances
    are equal (D - d == 0 everywhere) every gain is 0 and the lowest positions are picked.

    Raises ValueError for a non-square matrix, k < 0 or k > p, and NaN or inf distances.
    """
    if not isinstance(distances, torch.Tensor):
        raise TypeError(f"distances must be a torch.Tensor, got {type(distances).__name__}")
    if distances.dim() != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances must be a square (p, p) matrix, got shape {tuple(distances.shape)}")
    if isinstance(k, bool) or not isinstance(k, int):
        try:
            k = int(k.__index__())  # numpy / torch integer scalars
        except AttributeError:
            raise TypeError(f"k must be an int, got {type(k).__name__}") from None
    p = distances.shape[0]
    if k < 0 or k > p:
        raise ValueError(f"k={k} is out of range for a pool of {p} points; need 0 <= k <= {p}")
    device = distances.device
    if p == 0:
        return _empty_result(device)

    dtype = torch.float64 if distances.dtype == torch.float64 else torch.float32
    with _cpu_threads(device):
        W = distances.to(dtype).contiguous()  # no copy when already dtype and contiguous
        lo, hi = torch.aminmax(W)
        if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
            raise ValueError("distances contain NaN or inf; refusing to select over them")
        if k == 0:
            return _empty_result(device)
        greedy = _LazyGreedy(W, float(hi))
        greedy.run(k)
        order = torch.tensor(greedy.order, dtype=torch.int64, device=device)
        return FacilityLocationResult(
            order=order,
            gains=torch.stack(greedy.gains64),
            weights=_nearest_counts(W, order),
            objective=float((greedy.D - greedy.m64).sum()),
        )


@contextmanager
def _cpu_threads(device: torch.device):
    """Select on ``CPU_THREADS`` torch threads (default 1), restoring the count afterwards.

    The lazy loop issues thousands of small tensor ops, each a memory-bound pass over a few
    rows. With several intra-op threads every op ends in a barrier, and when other work keeps
    the cores busy a descheduled thread stalls each barrier for a scheduler time slice:
    measured on a shared 2-core machine, p = 5,000 took 0.8 s on one thread and 6-38 s on two,
    p = 20,000 7-9 s against 25 s. (Process-wide while it runs: torch has one intra-op pool.)
    """
    n = CPU_THREADS
    prev = torch.get_num_threads()
    change = device.type == "cpu" and n is not None and n != prev
    if change:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(prev)


class _LazyGreedy:
    """State of one greedy run: m (min(D, distance to S)), a heap of gain bounds, the picks."""

    def __init__(self, W: torch.Tensor, D: float):
        p = W.shape[0]
        dev, dtype = W.device, W.dtype
        self.W, self.D = W, D
        self.fixed = _fixed_batch(dev)
        self.evaluate = _GainEvaluator(W, self.fixed)
        self.m = torch.full((p,), D, dtype=dtype, device=dev)
        self.m64 = torch.full((p,), D, dtype=torch.float64, device=dev)
        self.selected = torch.zeros(p, dtype=torch.bool, device=dev)
        self.order: list[int] = []
        self.gains64: list[torch.Tensor] = []
        # Initial gains, exact (bounds with no slack). With m = D every term D - d is >= 0, so
        # on CPU a contiguous block gives bit for bit what `evaluate` would, without its gather
        # and clamp; CUDA keeps its one fixed evaluation shape.
        gains = torch.empty(p, dtype=dtype, device=dev)
        for start in range(0, p, _SCAN_ROWS):
            stop = min(start + _SCAN_ROWS, p)
            if self.fixed is None:
                gains[start:stop] = torch.sub(self.m, W[start:stop]).sum(dim=1)
            else:
                gains[start:stop] = self.evaluate(torch.arange(start, stop, device=dev), self.m)
        # (-bound, position, step it is exact for): the heap's top is the largest bound, lowest
        # position on ties, which is the naive greedy's order of preference.
        self.heap = [(-g, j, 0) for j, g in enumerate(gains.tolist())]
        heapq.heapify(self.heap)

    def accept(self, j: int) -> None:
        self.order.append(j)
        row = self.W[j]  # d(., j) by symmetry
        row64 = row.to(torch.float64)
        self.gains64.append(torch.clamp(self.m64 - row64, min=0).sum())
        torch.minimum(self.m64, row64, out=self.m64)
        torch.minimum(self.m, row, out=self.m)
        self.selected[j] = True

    def run(self, k: int) -> None:
        """Pop the top stale bounds in batches, push back their exact gains, until the top is
        exact for this step: that candidate beats every other bound (or ties it from a lower
        position), hence every other gain, so it is the naive greedy's pick."""
        try:
            while len(self.order) < k:
                if not self.refresh_top():
                    # The largest bound is 0, so every gain is 0 and stays 0: naive greedy now
                    # takes the lowest unselected positions in ascending order.
                    for j in torch.nonzero(~self.selected).flatten()[: k - len(self.order)].tolist():
                        self.accept(j)
                    return
                self.accept(heapq.heappop(self.heap)[1])
        finally:
            self.evaluate.release()

    def refresh_top(self) -> bool:
        """Re-evaluate stale bounds until the heap's top is exact for this step; False if every bound is 0."""
        heap, step = self.heap, len(self.order)
        b = self.fixed if self.fixed is not None else _CPU_FIRST_BATCH
        while heap[0][2] != step:
            if heap[0][0] >= 0.0:
                return False
            rows = []
            while heap and len(rows) < b and heap[0][2] != step:
                rows.append(heapq.heappop(heap)[1])
            gains = self.evaluate(torch.tensor(rows, device=self.W.device), self.m).tolist()
            for j, g in zip(rows, gains):
                heapq.heappush(heap, (-g, j, step))
            if self.fixed is None:
                b = min(2 * b, _CPU_BATCH_MAX)
        return True


def _nearest_counts(W: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """gamma_j: how many pool points have order[j] as nearest selected point (ties: lowest position).

    Reads d(i, s) as W[s, i], the same entries the greedy's m (and so the objective) used.
    """
    k = order.numel()
    p = W.shape[0]
    sorted_sel, perm = torch.sort(order)  # perm[q] = position in `order` of sorted_sel[q]
    counts = torch.zeros(k, dtype=torch.int64, device=W.device)
    cols = max(1, (1 << 22) // max(k, 1))  # ~4M entries per block
    for start in range(0, p, cols):
        block = W[:, start : start + cols].index_select(0, sorted_sel)  # (k, cols): d(i, s)
        nearest = torch.argmin(block, dim=0)  # first minimum = lowest pool position
        counts += torch.bincount(perm[nearest], minlength=k)
    return counts


def split_pool(positions: torch.Tensor, max_pool: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Split a pool larger than ``max_pool`` into ceil(p / max_pool) random near-equal parts.

    The parts come from one random permutation drawn from ``generator`` (sizes differ by at most
    one) and each part is sorted ascending. A pool of at most ``max_pool`` is returned unchanged
    as ``[positions]``.
    """
    if isinstance(max_pool, bool) or int(max_pool) != max_pool or max_pool < 1:
        raise ValueError(f"max_pool must be a positive integer, got {max_pool!r}")
    max_pool = int(max_pool)
    p = positions.numel()
    if p <= max_pool:
        return [positions]
    n_parts = -(-p // max_pool)
    perm = torch.randperm(p, generator=generator, device=generator.device)
    shuffled = positions.reshape(-1)[perm.to(positions.device)]
    return [torch.sort(part).values for part in torch.tensor_split(shuffled, n_parts)]


def in_threads(work, workers: int) -> None:
    """``work(i)`` for each worker i < ``workers``: in this thread for one, else in a pool of threads with torch
    on one intra-op thread (each worker's ops then end in no barrier; see ``_cpu_threads``), restored afterwards."""
    if workers <= 1:
        work(0)
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(workers)))
    finally:
        torch.set_num_threads(previous)
