"""k-center greedy (Sener & Savarese, ICLR 2018, "Active learning for convolutional neural
networks: a core-set approach", Alg. 1).

The core-set loss is bounded by the covering radius δ = max_i min_{c in S} ||x_i - x_c|| of the
selected centres S (their Theorem 1), so they minimise it: the k-center problem, NP-hard,
solved by the greedy 2-approximation (Gonzalez 1985): start from one point, then repeatedly add
u = argmax_i min_{c in S} ||x_i - x_c||, the point farthest from the current centres. Its radius
is at most twice the optimum. Here S starts from one point the caller chooses, ``start`` (the
paper starts from the already-labelled pool, which pruning does not have; prune's ``kcenter``
method gives the pool in a seeded random order and starts from its first point).

Neither "easy" nor "hard": k-center keeps the geometric extremes first (outliers included), then
fills in. Memory is O(p) beyond the (p, e) input: only the running min distance is kept, and each
new centre's distances are computed ``chunk`` rows at a time, in float64 (squared distances, which
rank like distances).
"""

from __future__ import annotations

import torch

CHUNK_ROWS = 4096


def kcenter_greedy(embedding: torch.Tensor, k: int, start: int = 0, chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """(p, e) embeddings -> int64 (min(k, p),) positions in the order greedy picked them, from
    position ``start``.

    Ties (equal farthest distances, duplicates) go to the lowest position; a picked point is
    never picked again, even when every remaining distance is 0.
    """
    p = embedding.shape[0]
    k = min(int(k), p)
    order = torch.empty(k, dtype=torch.long)
    if k == 0:
        return order
    nearest = torch.full((p,), float("inf"), dtype=torch.float64)
    pick = int(start)
    for t in range(k):
        order[t] = pick
        centre = embedding[pick].to(torch.float64)
        for start in range(0, p, chunk):
            block = embedding[start:start + chunk].to(torch.float64)
            torch.minimum(nearest[start:start + chunk], (block - centre).pow(2).sum(1), out=nearest[start:start + chunk])
        nearest[pick] = -1.0  # never re-picked: min(-1, d) stays -1
        pick = int(torch.argmax(nearest))
    return order


def covering_radius(embedding: torch.Tensor, centres: torch.Tensor) -> float:
    """δ = max_i min_{c in centres} ||x_i - x_c||, the quantity k-center greedy minimises (float64)."""
    x = embedding.to(torch.float64)
    return float(torch.cdist(x, x[centres]).min(1).values.max())
