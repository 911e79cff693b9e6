"""The difficulty stage: what a coreset should not spend its budget on, and strata over the rest.

Between the feature store and the greedy engine, for every method (``random`` included):

1. **Scores** read from the store, no model run. Each is averaged over the M stored posterior
   samples, since an average over the posterior is a steadier judge than one set of weights
   (seed 000, §3). Higher means harder:

   ========== =========================================================================
   ``el2n``   mean_m ||p^(m) - y||, the error L2 norm (Paul et al., NeurIPS 2021)
   ``loss``   mean_m -log p^(m)_y
   ``margin`` -(p̄_y - max_{c != y} p̄_c), p̄ = mean_m p^(m) (the area-under-margin idea,
              Pleiss et al., NeurIPS 2020); positive exactly when p̄ predicts another class
   ``trajectory`` mean over the warm-up checkpoints of the loss (how long it stayed high)
   ========== =========================================================================

   p^(m) = g^(m) + y is recovered exactly from the stored logit gradient g = p - y.

2. **Dropping** (``drop_hard``): ``"auto"`` drops the examples whose label the warm model,
   averaged over its posterior, believes less than a uniform guess would: p̄_y < 1/C. That is
   what a flipped label looks like once the model has learnt the true class; an example that is
   merely hard (near a boundary, p̄_y around 0.3) is kept, since a subset without its class's
   hard region is biased (dropping every misclassified example instead lost 2 points at 10 % on
   a weak Fashion-MNIST warm-up, docs/results.md). It needs no noise rate, and on data the model
   separates it drops nothing. A number f in (0, 1) drops the hardest f of each class by
   ``score``; 0 drops nothing. A class never falls below its budget: if dropping would leave
   fewer than k_c, the least hard of its dropped examples are kept.

3. **Strata** (``strata`` N > 1): the kept examples of a class are split into N strata of
   ``score`` and the method runs within each, on a budget of its own (``strata_budget``):

   * ``equal`` (coverage-centric selection, Zheng et al., ICLR 2023, Alg. 1): N equal-width
     bins, the class budget shared out equally, a bin getting at most its size and the rest
     going to the others (water-filling). This spreads a small budget over all difficulty
     levels, over-sampling the sparse hard ones (``ccs``).
   * ``proportional``: N equal-count bins (quantiles of ``score``), each with its share of the
     budget (largest remainder), so the subset keeps the class's difficulty distribution, as a
     uniform sample would, and the method chooses only *within* a difficulty level. Facility
     location on gradients alone spends a small budget on the sparse, far-apart hard examples
     (docs/results.md); within a stratum it covers that level instead.

   Before the strata a method may ask for a hard cut-off (``Method.cutoff``; ``ccs`` only): the
   hardest floor(β n) of the class by ``score`` are dropped too, as CCS's Alg. 1 drops them (Zheng
   et al., ICLR 2023; β from the pruning rate, ``field.ccs.ccs_beta``), never below the budget.

   ``strata="auto"`` (every facility-location method's default, with ``proportional``) uses 5
   strata in a class whose budget is under 7 % of its kept examples and 1 otherwise: small
   subsets need the data's typical examples, larger ones gain from the hard examples facility
   location favours (Sorscher et al., NeurIPS 2022, on pruning at small and large budgets). On
   the dev data, strata moved CRAIG, AdaCore, LCMat and ensemble from 3.5-7.5 points below
   random to within about a point at 1 % of Fashion-MNIST, and cost 1-4 points at 10-20 % of
   digits; 7 % lies between the budgets where they helped (up to 5 %) and where they cost
   (10 % and more), and both it and the 5 were chosen on that data (docs/results.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prune.errors import PruneError
from prune.features.store import chunk_rows
from prune.selection.budget import equal_split, largest_remainder
from prune.training import progress

SCORES = ("el2n", "loss", "margin", "trajectory")
STRATA_BUDGETS = ("equal", "proportional")
AUTO_STRATA = 5  # strata="auto": this many strata in a class whose budget is
AUTO_BELOW = 0.07  # under this share of its kept examples, else one (docs/results.md)


def scores_from_gradients(grad_logit: torch.Tensor, labels: torch.Tensor, name: str) -> torch.Tensor:
    """(n, M, C) logit gradients g = p - y of labelled examples -> (n,) float64 score ``name``.

    p^(m) = g^(m) + y is recovered exactly, so every score but ``trajectory`` (which needs the
    warm-up losses, ``stage_scores``) comes from the gradients alone.
    """
    g = grad_logit.to(torch.float64)
    if name == "el2n":
        return g.norm(dim=2).mean(1)
    p = g + torch.nn.functional.one_hot(labels, g.shape[-1]).to(torch.float64)[:, None, :]
    label = labels[:, None]
    if name == "loss":
        p_label = p.gather(2, label[:, None, :].expand(-1, p.shape[1], 1)).squeeze(2)
        return -p_label.clamp_min(torch.finfo(torch.float64).tiny).log().mean(1)
    if name == "margin":
        mean = p.mean(1)
        p_label = mean.gather(1, label).squeeze(1)
        others = mean.scatter(1, label, -math.inf).max(1).values
        return others - p_label
    raise PruneError(f"unknown difficulty score {name!r}; choose one of: {', '.join(SCORES)}")


def stage_scores(store, name: str, unlikely: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """float64 score ``name`` (one of ``SCORES``) of every example in ``store``, higher is harder,
    and with ``unlikely`` their ``below_chance`` mask (else None).

    Read one store chunk of rows at a time (``chunk_rows``), each array once per block: memory stays
    one block of the store whatever n is, and the chunks are read in order, each once.
    """
    n = store.num_examples
    # Filled in place: small tensors kept between the blocks' big temporary ones would fragment
    # the heap, and it would grow by about a block for every block read.
    score = torch.empty(n, dtype=torch.float64)
    mask = torch.empty(n, dtype=torch.bool) if unlikely else None
    with progress() as bars:
        task = bars.add_task("difficulty scores", total=n, status="", unit="examples")
        for block in chunk_rows(n):
            labels = store.labels[block]
            grad = store.grad_logit[block] if unlikely or name != "trajectory" else None
            score[block] = (store.loss_per_epoch[block].to(torch.float64).mean(1) if name == "trajectory"
                            else scores_from_gradients(grad, labels, name))
            if unlikely:
                mask[block] = below_chance(grad, labels)
            bars.advance(task, len(block))
    return score, mask


def below_chance(grad_logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(n, M, C) logit gradients -> (n,) bool: the posterior-mean probability of the label, p̄_y =
    mean_m (g^(m)_y + 1), is below 1/C (``drop_hard="auto"``)."""
    p_label = grad_logit.to(torch.float64).gather(2, labels[:, None, None].expand(-1, grad_logit.shape[1], 1)) + 1
    return p_label.squeeze(2).mean(1) < 1 / grad_logit.shape[-1]


def hard_examples(drop_hard: str | float, score: torch.Tensor, unlikely: torch.Tensor | None, k: int) -> torch.Tensor:
    """Which of one class's examples to drop: a bool mask, leaving at least ``k`` examples.

    ``auto``: the ``unlikely`` ones (``below_chance``); a fraction f: the floor(f n) with the
    highest ``score``; 0: none. If fewer than ``k`` would remain, the least hard (by ``score``)
    of the dropped are kept.
    """
    if drop_hard == "auto":
        hard = unlikely.clone()
    else:
        hard = torch.zeros(len(score), dtype=torch.bool)
        hard[torch.argsort(score, descending=True, stable=True)[: math.floor(drop_hard * len(score))]] = True
    missing = k - int((~hard).sum())
    if missing > 0:
        dropped = torch.nonzero(hard).flatten()
        hard[dropped[torch.argsort(score[dropped], stable=True)[:missing]]] = False
    return hard


def cutoff_examples(score: torch.Tensor, dropped: torch.Tensor, k: int, cut: float) -> torch.Tensor:
    """The hard cut-off of one class (CCS, Zheng et al., ICLR 2023, Alg. 1): a bool mask of its hardest
    floor(``cut`` n) examples by ``score`` (ties: the lower row first) that are not ``dropped`` already,
    the hardest first up to as many as leave ``k`` examples."""
    top = torch.argsort(score, descending=True, stable=True)[: math.floor(cut * len(score))]
    top = top[~dropped[top]]
    room = max(int((~dropped).sum()) - k, 0)
    extra = torch.zeros(len(score), dtype=torch.bool)
    extra[top[:room]] = True
    return extra


def parse_drop_hard(value) -> str | float:
    """``"auto"`` or a fraction in [0, 1); the CLI's text or the API's number."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = math.nan
    if isinstance(value, bool) or not 0 <= fraction < 1:
        raise PruneError(f"--drop-hard must be auto or a fraction in [0, 1), got {value!r}", parameters=True)
    return fraction


def parse_strata(value) -> int | str:
    """``"auto"`` or a whole number >= 1; the CLI's text or the API's number."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PruneError(f"--strata must be auto or a whole number >= 1, got {value!r}", parameters=True)
    return value


@dataclass(frozen=True)
class DifficultyConfig:
    """The stage's knobs; the defaults (``drop_hard="auto"``, ``strata=1``) are prune's."""

    drop_hard: str | float = "auto"
    strata: int | str = 1  # or "auto"
    score: str = "el2n"
    strata_budget: str = "equal"

    def __post_init__(self):
        object.__setattr__(self, "drop_hard", parse_drop_hard(self.drop_hard))
        object.__setattr__(self, "strata", parse_strata(self.strata))
        if self.score not in SCORES:
            raise PruneError(f"unknown --difficulty-score {self.score!r}; choose one of: {', '.join(SCORES)}",
                             parameters={"--difficulty-score": "score"})
        if self.strata_budget not in STRATA_BUDGETS:
            raise PruneError(f"unknown --strata-budget {self.strata_budget!r}; choose one of: "
                             f"{', '.join(STRATA_BUDGETS)}", parameters=True)

    @property
    def active(self) -> bool:
        return self.drop_hard != 0 or self.strata != 1

    def to_dict(self) -> dict:
        return {"drop_hard": self.drop_hard, "strata": self.strata, "score": self.score,
                "strata_budget": self.strata_budget}


class Difficulty:
    """The stage over one store: ``split(rows, k)`` gives the (rows, budget) parts a method selects from.

    Every example's score (and, for ``drop_hard="auto"``, whether its label is below chance) is
    computed once, in one pass over the store (``stage_scores``); the classes then only index them.
    """

    def __init__(self, store, options: DifficultyConfig):
        self.options = options
        self.score, self.unlikely = stage_scores(store, options.score, unlikely=options.drop_hard == "auto")
        self.dropped: list[int] = []
        self.cutoffs: list[float] = []  # per class: the hard cut-off's share (0: none)
        self.cut: list[int] = []  # per class: examples the cut-off dropped beyond ``dropped``

    def kept(self, rows: torch.Tensor, k: int, cut: float = 0.0) -> torch.Tensor:
        """``rows`` less the examples dropped as too hard and, with ``cut`` > 0, the hard cut-off's
        (``cutoff_examples``), never fewer than ``k`` (sorted)."""
        unlikely = None if self.unlikely is None else self.unlikely[rows]
        score = self.score[rows]
        hard = hard_examples(self.options.drop_hard, score, unlikely, k)
        extra = cutoff_examples(score, hard, k, cut)
        self.dropped.append(int(hard.sum()))
        self.cutoffs.append(cut)
        self.cut.append(int(extra.sum()))
        return rows[~(hard | extra)]

    def split(self, rows: torch.Tensor, k: int, cut: float = 0.0) -> list[tuple[torch.Tensor, int]]:
        """(rows, k) of one class -> [(rows of a stratum, its budget)], dropped examples (and with ``cut``
        the hard cut-off's) left out."""
        rows = self.kept(rows, k, cut)
        strata = self.options.strata
        if strata == "auto":
            strata = AUTO_STRATA if k < AUTO_BELOW * len(rows) else 1
        if strata == 1 or len(rows) == 0:
            return [(rows, k)]
        score = self.score[rows]
        if self.options.strata_budget == "proportional":  # quantile bins, each with its share of k
            parts = list(torch.tensor_split(rows[torch.argsort(score, stable=True)], strata))
            parts = [torch.sort(part).values for part in parts]
            return list(zip(parts, largest_remainder([len(p) for p in parts], k)))
        low, high = float(score.min()), float(score.max())
        width = (high - low) / strata
        bins = ((score - low) / width).floor().long().clamp_(0, strata - 1) if width > 0 else torch.zeros(len(rows), dtype=torch.long)
        parts = [rows[bins == b] for b in range(strata)]
        return [(part, budget) for part, budget in zip(parts, equal_split([len(p) for p in parts], k))]
