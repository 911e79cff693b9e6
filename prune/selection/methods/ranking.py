"""Score-based pruning: per class, keep the k examples a per-example score ranks first.

Each method scores the examples of a pool with one score of the literature
(``prune.selection.field.scores``), read as higher = harder, and keeps the k hardest
(``keep="hard"``) or the k easiest (``"easy"``; ``field.ranking.keep_by_score``: ties by row index,
so the two are exact complements). ``--keep`` chooses; without it each keeps what its paper keeps:

==================== ========================================= ====================== =======
method               score s_i (higher = harder)               read from the store    keeps
==================== ========================================= ====================== =======
``el2n``             mean_m ||p_i^(m) - y_i||_2                grad_logit (p = g + y) hard
``grand``            mean_m ||g_i^(m)|| sqrt(||h_i^(m)||^2 + 1) grad_logit, embedding  hard
``forgetting``       forgetting events over the T checkpoints  correct_per_epoch      hard
``aum``              -(1/T) sum_t (z_y - max_{c != y} z_c)_t    margin_per_epoch       easy
``entropy``          -sum_c p̄_ic log p̄_ic                      grad_logit             hard
``least_confidence`` 1 - max_c p̄_ic                            grad_logit             hard
==================== ========================================= ====================== =======

* EL2N and GraNd (Paul, Ganguli, Dziugaite, NeurIPS 2021, §2): the expected error norm and the
  expected gradient norm early in training; the paper keeps the highest scores. The expectation
  is over the store's features at the warm weights (``--posterior point``, the default) or over its
  M posterior samples (``mean``; the paper averages over initialisations). GraNd here is the last
  layer's gradient norm, ||g (x) [h; 1]|| = ||g|| sqrt(||h||^2 + 1).
* Forgetting (Toneva et al., ICLR 2019, §3): how often an example goes from classified correctly
  to incorrectly between consecutive checkpoints; never-learned examples count T, above all
  others. The paper prunes the unforgettable ones: it keeps the most forgotten.
* AUM (Pleiss, Zhang, Elenberg, Weinberger, NeurIPS 2020, eq. 1-2): the mean logit margin over
  the checkpoints. The paper removes the examples of LOWEST AUM as likely mislabelled and keeps
  the rest: "easy" (highest AUM) is its side. The pruning literature's AUM baseline (CCS's) keeps
  the lowest instead: ``--keep hard``.
* Entropy and least confidence (Coleman et al., ICLR 2020, "selection via proxy", the
  uncertainty metrics): of the predictive distribution p̄ (the mean over the samples read); the
  paper keeps the most uncertain.

The per-epoch scores read the warm-up's checkpoints, not the posterior samples: ``--posterior`` is
refused there. Each pick stands for p / k examples of its pool (gamma).
"""

from __future__ import annotations

import torch

from prune.features.store import POSTERIORS
from prune.selection.field import scores
from prune.selection.field.ranking import keep_by_score
from prune.selection.methods.base import FieldMethod


class ScoreMethod(FieldMethod):
    """Keep the k examples of a pool that ``scores`` ranks first at the ``keep`` end."""

    default_keep = "hard"

    def scores(self, pool: torch.Tensor) -> torch.Tensor:
        """(p,) float64 score of the pool's examples, higher = harder."""
        raise NotImplementedError

    def pick(self, pool, k):
        return keep_by_score(self.scores(pool), torch.arange(len(pool)), k, self.keep)


class FinalScoreMethod(ScoreMethod):
    """A score of the warm model's predictions: at the unperturbed weights or over the posterior samples."""

    default_posterior = "point"
    posteriors = POSTERIORS
    source = "grad_logit"

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        self.grad, _, self.embedding = store.posterior_features(self.posterior)  # each (n, M', .)

    def probs(self, pool: torch.Tensor) -> torch.Tensor:
        """(p, M', C) float64 probabilities p = g + y, recovered exactly from the stored logit gradient."""
        labels = torch.nn.functional.one_hot(self.store.labels[pool], self.store.num_classes)
        return self.grad[pool].to(torch.float64) + labels.to(torch.float64)[:, None, :]


class El2n(FinalScoreMethod):
    """EL2N (Paul et al. 2021, §2): E ||p(x) - y||_2; keeps the highest."""

    name = "el2n"

    def scores(self, pool):
        return scores.el2n(self.probs(pool), self.store.labels[pool])


class Grand(FinalScoreMethod):
    """GraNd (Paul et al. 2021, §2) on the last layer: E ||g|| sqrt(||h||^2 + 1); keeps the highest."""

    name = "grand"
    source = "grad_logit, embedding"

    def scores(self, pool):
        return scores.grand(self.grad[pool], self.embedding[pool])


class Entropy(FinalScoreMethod):
    """Entropy of p̄ (Coleman et al. 2020): -sum_c p̄_c log p̄_c; keeps the most uncertain."""

    name = "entropy"

    def scores(self, pool):
        return scores.entropy(self.probs(pool))


class LeastConfidence(FinalScoreMethod):
    """Least confidence (Coleman et al. 2020): 1 - max_c p̄_c; keeps the most uncertain."""

    name = "least_confidence"

    def scores(self, pool):
        return scores.least_confidence(self.probs(pool))


class Forgetting(ScoreMethod):
    """Forgetting events over the warm-up checkpoints (Toneva et al. 2019, §3); keeps the most forgotten."""

    name = "forgetting"
    source = "correct_per_epoch"

    def scores(self, pool):
        return scores.forgetting_events(self.store.correct(pool))


class Aum(ScoreMethod):
    """Area under the margin (Pleiss et al. 2020, eq. 1-2), negated so that higher is harder; keeps the
    highest AUM (the paper's side: it removes the lowest as mislabelled)."""

    name = "aum"
    source = "margin_per_epoch"
    default_keep = "easy"

    def scores(self, pool):
        return -scores.aum(self.store.margin(pool))

