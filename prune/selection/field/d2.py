"""D2 pruning (Maharana, Yadav, Bansal, ICLR 2024, "D2 Pruning: message passing for balancing
diversity and difficulty in data pruning", the method section).

The data set is a graph: each example a node, joined to its k nearest neighbours N(i) by
Euclidean distance d(i, j) between embeddings, with its difficulty score s_i as node feature
(higher = harder and, as in the paper, non-negative: forgetting, EL2N, or -AUM shifted to 0).

* Forward message passing: every node gathers its neighbours' difficulty, weighted by an
  RBF of their distance, s_i <- s_i + sum_{j in N(i)} exp(-γ_f d(i, j)) s_j: a hard example in a
  dense hard region scores higher than an isolated one.
* Reverse message passing, during selection: take the node of highest updated score,
  then lower its neighbours' scores, s_j <- s_j - exp(-γ_r d(i, j)) s_i for j in N(i), so the
  next picks come from elsewhere (diversity). Repeat k times.

Defaults are the authors' CIFAR-10 settings in their released code: k = 5 neighbours, γ_f = 1
(their forward weight is exp(-d)), γ_r = 0.1. N(i) is i's own k nearest neighbours (directed, as
in their precomputed-graph path; their dense path also adds the reverse edges). The paper runs D2
inside CCS strata (its CIFAR runs: 25 strata, hard cut-off); this module is the graph part, to run
on a stratum or a class as given.
"""

from __future__ import annotations

import torch

NEIGHBOURS = 5
GAMMA_FORWARD = 1.0
GAMMA_REVERSE = 0.1
CHUNK_ELEMENTS = 1 << 22  # (rows x p x e) float64 differences per block of the kNN search


def knn_graph(embedding: torch.Tensor, neighbours: int = NEIGHBOURS) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, e) embeddings -> (index, distance), each (p, k'), k' = min(neighbours, p - 1): every
    point's k' nearest other points by Euclidean distance (float64), nearest first, ties by the
    lower position. Computed a block of rows at a time: memory O(rows x p x e) beyond the output."""
    x = embedding.to(torch.float64)
    p = x.shape[0]
    k = max(min(int(neighbours), p - 1), 0)
    rows = max(1, CHUNK_ELEMENTS // max(1, p * x.shape[1]))
    index, distance = torch.empty(p, k, dtype=torch.long), torch.empty(p, k, dtype=torch.float64)
    for start in range(0, p, rows):
        d = (x[start:start + rows, None, :] - x[None, :, :]).pow(2).sum(2).sqrt()
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = float("inf")  # no self-loops
        nearest = torch.sort(d, dim=1, stable=True).indices[:, :k]
        index[start:start + rows], distance[start:start + rows] = nearest, d.gather(1, nearest)
    return index, distance


def forward_messages(scores: torch.Tensor, index: torch.Tensor, distance: torch.Tensor, gamma: float = GAMMA_FORWARD) -> torch.Tensor:
    """Forward message passing: s_i + sum_{j in N(i)} exp(-γ_f d(i, j)) s_j, float64 (p,)."""
    s = scores.to(torch.float64)
    return s + (torch.exp(-gamma * distance) * s[index]).sum(1)


def d2_select(embedding: torch.Tensor, scores: torch.Tensor, k: int, neighbours: int = NEIGHBOURS,
              gamma_forward: float = GAMMA_FORWARD, gamma_reverse: float = GAMMA_REVERSE) -> torch.Tensor:
    """D2 pruning on one pool: int64 positions of min(k, p) examples in pick order.

    Forward messages once, then k rounds of: pick the unpicked node of highest score (ties: lower
    position), and send its reverse message to its neighbours.
    """
    index, distance = knn_graph(embedding, neighbours)
    s = forward_messages(scores, index, distance, gamma_forward)
    down = torch.exp(-gamma_reverse * distance)
    k = min(int(k), s.numel())
    order = torch.empty(k, dtype=torch.long)
    for t in range(k):
        i = int(torch.argmax(s))
        order[t] = i
        s[index[i]] -= down[i] * s[i]
        s[i] = -float("inf")
    return order
