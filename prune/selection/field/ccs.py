"""Coverage-centric coreset selection, CCS (Zheng, Liu, Lai, Prakash, ICLR 2023, Alg. 1).

With a difficulty score s (higher = harder; for AUM use -AUM):

1. Hard cut-off: drop the floor(β p) hardest examples (the likely mislabelled, which are also
   the sparse ones a small budget would over-sample);
2. split the rest into N strata of equal width over [min s, max s];
3. share the budget k equally over the strata, a stratum getting at most its size and the rest
   going to the others (water-filling, ``budget.equal_split``). Alg. 1 visits the strata from
   the smallest up, giving each min(size, remaining // strata left): the same level, though its
   few leftover single units may go to other strata than here (lowest stratum first);
4. sample uniformly without replacement within each stratum.

So CCS keeps neither the easy nor the hard end: after the cut-off it covers every difficulty
level, over-sampling the sparse (hard) ones relative to a uniform sample. Applied per class here
(prune's budgets are class-balanced); the paper applies it to the whole training set.
N = 50 strata is the authors' released setting.

β (``ccs_beta``) is a hyper-parameter the paper tunes per data set and pruning rate (its
hyper-parameter appendix table). The values used here are those for CIFAR-10 with AUM as given
to this project: β = 0, 0.1, 0.2, 0.3, 0.4 at pruning rates 30, 50, 70, 80, 90 %. The paper's
text was not available to check them, and the authors' README runs CIFAR-10 at 90 % with
``--mis-ratio 0.3``, not 0.4.
"""

from __future__ import annotations

import math

import torch

from prune.selection.budget import equal_split

STRATA = 50
# (pruning rate, β): CIFAR-10, AUM, the paper's hyper-parameter table as given to this project.
BETA_TABLE = ((0.3, 0.0), (0.5, 0.1), (0.7, 0.2), (0.8, 0.3), (0.9, 0.4))


def ccs_beta(kept_fraction: float) -> float:
    """The hard cut-off β for keeping ``kept_fraction`` of the data (pruning rate r = 1 - kept).

    Piecewise linear through ``BETA_TABLE``; 0 below r = 30 % (the paper uses no cut-off at low
    rates); above r = 90 % the last segment's slope (1) is extended, β = r - 0.5, so β < 0.5 and
    β < r always leave the budget's examples. Interpolation and extrapolation are this module's
    choice, not the paper's: it reports only the tabulated rates.
    """
    if not 0 < kept_fraction <= 1:
        raise ValueError(f"kept_fraction must be in (0, 1], got {kept_fraction!r}")
    r = 1 - kept_fraction
    (r0, b0), *rest = BETA_TABLE
    if r <= r0:
        return b0
    for r1, b1 in rest:
        if r <= r1:
            return b0 + (b1 - b0) * (r - r0) / (r1 - r0)
        r0, b0 = r1, b1
    return b0 + (r - r0)


def hard_cutoff(scores: torch.Tensor, k: int, beta: float) -> torch.Tensor:
    """Positions (ascending) left after dropping the floor(β p) highest scores (Alg. 1's hard
    cut-off; among equal scores the lower position goes first), never leaving fewer than k."""
    p = scores.numel()
    drop = min(math.floor(beta * p), max(p - int(k), 0))
    order = torch.argsort(scores.to(torch.float64), descending=True, stable=True)
    return torch.sort(order[drop:]).values


def ccs_strata(scores: torch.Tensor, k: int, beta: float, strata: int = STRATA) -> list[tuple[torch.Tensor, int]]:
    """Alg. 1 steps 1-3: [(positions of a stratum, its budget)] over the strata, after the cut-off.

    Stratum b holds the scores in [min + b w, min + (b+1) w), w = (max - min) / N, the maximum in
    the last; all in one stratum when the scores are equal. Budgets sum to min(k, kept).
    """
    kept = hard_cutoff(scores, k, beta)
    if kept.numel() == 0:
        return []
    s = scores[kept].to(torch.float64)
    low, width = float(s.min()), (float(s.max()) - float(s.min())) / strata
    bins = ((s - low) / width).floor().long().clamp_(0, strata - 1) if width > 0 else torch.zeros_like(kept)
    parts = [kept[bins == b] for b in range(strata)]
    budgets = equal_split([len(part) for part in parts], min(int(k), kept.numel()))
    return [(part, budget) for part, budget in zip(parts, budgets) if len(part)]


def ccs(scores: torch.Tensor, k: int, beta: float, generator: torch.Generator, strata: int = STRATA) -> torch.Tensor:
    """CCS (Alg. 1) on one pool: int64 positions (ascending) of min(k, p - cut) examples, drawn
    uniformly within each stratum of ``ccs_strata`` from ``generator``."""
    picks = [part[torch.randperm(len(part), generator=generator, device=generator.device)[:budget].to(part.device)]
             for part, budget in ccs_strata(scores, k, beta, strata)]
    return torch.sort(torch.cat(picks)).values if picks else torch.empty(0, dtype=torch.long)
