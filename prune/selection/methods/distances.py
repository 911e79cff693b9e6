"""Pairwise distances shared by the methods, computed from Gram matrices in float64.

Every function takes per-sample features of one pool with a posterior axis, shape (p, M, d),
and returns the *expected* distance over the M samples, (1/M) sum_m d_m(i, j) (seed 000
eq. 6) -- never the distance of averaged features. The diagonal is exactly 0.
"""

from __future__ import annotations

import torch


def _sqrt_sq(sq: torch.Tensor) -> torch.Tensor:
    out = sq.clamp_min_(0).sqrt_()
    out.fill_diagonal_(0)
    return out


def euclidean(x: torch.Tensor) -> torch.Tensor:
    """(p, d) -> (p, p) Euclidean distances ||x_i - x_j|| via |x_i|^2 + |x_j|^2 - 2 <x_i, x_j>."""
    x = x.double()
    norms = (x * x).sum(1)
    return _sqrt_sq(norms[:, None] + norms[None, :] - 2 * x @ x.T)


def expected_euclidean(x: torch.Tensor) -> torch.Tensor:
    """(p, M, d) -> (p, p): mean over posterior samples of the Euclidean distance."""
    return torch.stack([euclidean(x[:, m]) for m in range(x.shape[1])]).mean(0)


def last_layer_gradient(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(p, C), (p, e) -> (p, p): ||G_i - G_j|| with G = g (x) [h; 1], never materialising G.

    <G_i, G_j> = <g_i, g_j> <h~_i, h~_j>, so two small Gram matrices replace a C(e+1)-wide one
    (methods.md, "Never materialise G").
    """
    g = g.double()
    h_tilde = torch.cat([h.double(), torch.ones(len(h), 1, dtype=torch.float64, device=h.device)], 1)
    gram = (g @ g.T) * (h_tilde @ h_tilde.T)
    sq_norms = gram.diagonal()
    return _sqrt_sq(sq_norms[:, None] + sq_norms[None, :] - 2 * gram)


def manhattan(x: torch.Tensor) -> torch.Tensor:
    """(p, K) -> (p, p) L1 distances sum_k |x_ik - x_jk|."""
    x = x.double()
    return torch.cdist(x[None], x[None], p=1)[0]
