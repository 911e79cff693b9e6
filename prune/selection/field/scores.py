"""Per-example scores from the warm-up, the ones the data-pruning literature ranks by.

Inputs, for n labelled examples, C classes, T warm-up epochs and M posterior samples:
``prob_label`` (n, T) p_y per epoch, ``margin`` (n, T) logit margin z_y - max_{c != y} z_c per
epoch, ``correct`` (n, T) argmax_c z_c = y per epoch, ``probs`` (n, C) softmax output (or (n, M, C) posterior samples, averaged as documented per
score), ``grad_logit`` (n, M, C) g = p - y and ``embedding`` (n, M, e) the penultimate h.

=================== ============================================ ================================
score               formula                                      higher means
=================== ============================================ ================================
``el2n``            mean_m ||p^(m) - y||_2                       harder (Paul et al. 2021)
``grand``           mean_m ||g^(m)|| sqrt(||h^(m)||^2 + 1)       harder (Paul et al. 2021)
``forgetting_events`` #{t: correct_t and not correct_{t+1}}      harder (Toneva et al. 2019)
``aum``             (1/T) sum_t (z_y - max_{c != y} z_c)         EASIER (Pleiss et al. 2020)
``entropy``         -sum_c p̄_c log p̄_c                           more uncertain (Coleman 2020)
``least_confidence`` 1 - max_c p̄_c                               more uncertain (Coleman 2020)
=================== ============================================ ================================

"Keep hard" (the papers' choice at low pruning rates: EL2N, GraNd, forgetting, entropy, least
confidence keep the highest scores) and "keep easy" (what every one of them needs at high rates,
Sorscher et al. 2022) are both ``ranking.keep_by_score`` on a higher-is-harder score; pass
``-aum(margin)`` there, since a LOW AUM marks the hard and the mislabelled examples.
"""

from __future__ import annotations

import torch

from prune.selection.difficulty import scores_from_gradients


def _with_samples(values: torch.Tensor) -> torch.Tensor:
    """(n, w) -> (n, 1, w) float64; (n, M, w) -> float64 as is."""
    values = values.to(torch.float64)
    return values[:, None, :] if values.dim() == 2 else values


def mean_probs(probs: torch.Tensor) -> torch.Tensor:
    """(n, C) or (n, M, C) probabilities -> (n, C) float64 p̄ = mean_m p^(m), the posterior predictive."""
    return _with_samples(probs).mean(1)


def el2n(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """EL2N (Paul et al., NeurIPS 2021, §2, the EL2N score): E ||p(x) - y||_2 over the M samples.

    p - y is the logit gradient g, so this is ``difficulty.scores_from_gradients(g, y, "el2n")``:
    the same number the difficulty stage computes from the store. Higher is harder.
    """
    p = _with_samples(probs)
    g = p - torch.nn.functional.one_hot(labels, p.shape[-1]).to(torch.float64)[:, None, :]
    return scores_from_gradients(g, labels, "el2n")


def grand(grad_logit: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """GraNd (Paul et al., NeurIPS 2021, §2, the GraNd score) on the last layer: E ||∇_W ℓ(x)||_2.

    For the last layer W (C x (e+1), bias included) the gradient is the outer product g [h; 1]^T,
    whose Frobenius norm factorises: ||g|| * sqrt(||h||^2 + 1). Averaged over the M samples (the
    paper averages over initialisations). Higher is harder.
    """
    g = _with_samples(grad_logit).norm(dim=2)
    h = _with_samples(embedding).pow(2).sum(2)
    return (g * (h + 1).sqrt()).mean(1)


def forgetting_events(correct: torch.Tensor) -> torch.Tensor:
    """Forgetting events (Toneva et al., ICLR 2019, §3): transitions correct -> incorrect between
    consecutive epochs. ``correct`` (n, T) is whether each example is classified correctly at each
    epoch, acc_t = [argmax_c z_c = y] (bool or 0/1: the store's ``correct_per_epoch``), or the
    logit margin z_y - max_{c != y} z_c, read as correct where it is > 0 (the two differ only at ties).

    Examples never classified correctly in the T epochs ("never learned") get T, more than any
    learned example can reach (at most floor(T / 2) events): the paper ranks them as the most
    forgettable (infinitely many events), ahead of every example learned at least once. Unforgettable
    examples (learned, never forgotten) score 0. Float64 counts; higher is harder.
    """
    correct = correct > 0
    events = (correct[:, :-1] & ~correct[:, 1:]).sum(1).to(torch.float64)
    return torch.where(correct.any(1), events, torch.tensor(float(correct.shape[1]), dtype=torch.float64))


def aum(margin: torch.Tensor) -> torch.Tensor:
    """Area under the margin (Pleiss et al., NeurIPS 2020, eq. 1-2): (1/T) sum_t M_t, with the
    logit margin M_t = z_y - max_{c != y} z_c at epoch t.

    LOW AUM is hard, and a negative AUM flags a likely mislabelled example (the model keeps
    preferring another class); use ``-aum`` as a higher-is-harder score.
    """
    return margin.to(torch.float64).mean(1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the prediction (Coleman et al., ICLR 2020, "selection via proxy", uncertainty metrics):
    -sum_c p̄_c log p̄_c with p̄ the posterior-mean probabilities (0 log 0 = 0).

    Higher is more uncertain; the paper keeps the highest.
    """
    p = mean_probs(probs)
    return -torch.where(p > 0, p * p.clamp_min(torch.finfo(torch.float64).tiny).log(), torch.zeros_like(p)).sum(1)


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """Least confidence (Coleman et al., ICLR 2020, uncertainty metrics): 1 - max_c p̄_c. Higher is more
    uncertain; the paper keeps the highest."""
    return 1 - mean_probs(probs).max(1).values
