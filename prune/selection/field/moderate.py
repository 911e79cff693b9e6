"""Moderate-DS (Xia et al., ICLR 2023, "Moderate coreset: a universal method of data selection
for real-world data-efficient deep learning").

Per class c, each example's score is its distance to the class centre, d_i = ||h_i - μ_c||_2
with μ_c the mean embedding of the class (the paper's "distance to the class center" score), and
the k examples kept are those whose distance is nearest the median distance: |d_i - median(d)|
smallest. Neither easy (near the centre) nor hard (far out): the moderate ones, which the paper
argues are robust across noise and budgets. The authors' released code keeps the middle band of
the distance ranks instead; the two coincide when the distances are symmetric about the median.
"""

from __future__ import annotations

import torch


def centre_distances(embedding: torch.Tensor) -> torch.Tensor:
    """(p, e) embeddings of one class -> (p,) float64 distances to their mean, ||h_i - μ||_2."""
    x = embedding.to(torch.float64)
    return (x - x.mean(0)).norm(dim=1)


def moderate(embedding: torch.Tensor, k: int) -> torch.Tensor:
    """(p, e) embeddings of one class -> int64 positions of the min(k, p) examples whose distance
    to the class centre is nearest the median distance, nearest first (ties: lower position).

    The median of an even count is the mean of the two middle distances.
    """
    d = centre_distances(embedding)
    if d.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    gap = (d - torch.quantile(d, 0.5)).abs()
    return torch.argsort(gap, stable=True)[: int(k)]
