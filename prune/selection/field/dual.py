"""DUAL (Cho, Shin, Kang, Yun, ICML 2025, "Lightweight dataset pruning without full training via
example difficulty and prediction uncertainty").

Score, from p_y over the first T epochs of training only (T = 30 of 200 on CIFAR in the paper):
over the sliding windows W_k = {k, ..., k + J - 1} of J epochs (J = 10),

    DUAL(x) = (1 / (T - J + 1)) sum_k  std_{t in W_k}(p_y^(t)) * (1 - mean_{t in W_k}(p_y^(t))),

prediction uncertainty (the window's standard deviation, as Dyn-Unc) times difficulty (one minus
the window's mean confidence). Higher = more important; the plain method keeps the highest. The
authors' code multiplies the std by 10 and uses the sample (n - 1) standard deviation; the
constant does not change any ranking or sampling probability and is left out.

Pruning-ratio-adaptive Beta sampling, for high pruning rates: keeping the top scores alone
collapses at e.g. 90 % pruning, so examples are sampled without replacement with probability
proportional to Beta(p̄_y; α, β) * DUAL(x), p̄_y the mean of p_y over the recorded epochs, where

    β = C (1 - μ_A) (1 - r^{c_D}),   α = C + 1 - β,   C = 15,

r the pruning rate and μ_A the mean p̄_y of the ``anchors`` = 10 highest-scoring examples. As r
grows, β -> 0 and the Beta's mass moves to p̄_y near 1: the easier examples, the "keep easy"
regime at high rates. c_D = 4 is the value in the authors' CIFAR command line (their README); the
paper tunes it per data set, and its value for CIFAR-10 could not be checked here. The constants
C = 15 and α = C + 1 - β are the released code's (``beta_sampling``).
"""

from __future__ import annotations

import torch

WINDOW = 10
SCALE = 15.0
C_D = 4.0
ANCHORS = 10


def dual_score(prob_label: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """(n, T) p_y per epoch -> (n,) float64 DUAL score, the mean over the T - J + 1 windows of
    std * (1 - mean); one window of all T epochs when T < J. The std is the sample (n - 1) one."""
    p = prob_label.to(torch.float64)
    j = min(int(window), p.shape[1])
    windows = p.unfold(1, j, 1)  # (n, T - J + 1, J)
    return (windows.std(2) * (1 - windows.mean(2))).mean(1)


def dual_weights(score: torch.Tensor, mean_prob: torch.Tensor, kept_fraction: float,
                 c_d: float = C_D, scale: float = SCALE, anchors: int = ANCHORS) -> torch.Tensor:
    """(n,) sampling weights Beta(p̄_y; α, β) * DUAL, unnormalised, float64 (ratio-adaptive sampling).

    p̄_y is clamped into [1e-6, 1 - 1e-6] (the Beta density is infinite or 0 at the ends) and β to
    at least 1e-6 (β = 0 when μ_A = 1 or nothing is pruned).
    """
    s = score.to(torch.float64)
    m = mean_prob.to(torch.float64)
    anchor = m[torch.argsort(s, descending=True, stable=True)[:anchors]].mean()
    b = (scale * (1 - anchor) * (1 - (1 - kept_fraction) ** c_d)).clamp_min(1e-6)
    a = scale + 1 - b
    density = torch.distributions.Beta(a, b).log_prob(m.clamp(1e-6, 1 - 1e-6)).exp()
    return density * s


def dual_sample(weights: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """int64 positions of min(k, n) examples drawn without replacement with probability
    proportional to ``weights`` (successive draws, as ``numpy.random.choice(replace=False)``).

    When fewer than k weights are positive, all of those are taken and the rest drawn uniformly
    from the zero-weight examples (DUAL is 0 for an example whose p_y never moved).
    """
    w = weights.to(torch.float64).clamp_min(0)
    k = min(int(k), w.numel())
    take = min(k, int((w > 0).sum()))
    first = torch.multinomial(w, take, replacement=False, generator=generator) if take else torch.empty(0, dtype=torch.long)
    zero = torch.nonzero(w == 0).flatten()
    rest = zero[torch.randperm(zero.numel(), generator=generator)[: k - take]]
    return torch.cat([first, rest])
