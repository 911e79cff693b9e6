"""Keep the examples a score ranks first, within one class: how every score-based method selects.

EL2N, GraNd, forgetting (Paul et al. 2021; Toneva et al. 2019) and the uncertainty scores
(Coleman et al. 2020) keep the *hardest* examples, the highest score; at high pruning rates the
easiest ones do better (Sorscher et al., NeurIPS 2022, "Beyond neural scaling laws"), so both
are offered. Scores are read as higher = harder (negate AUM first, ``scores.aum``).

The order is total and deterministic: by score, ties by row index, lower rows first for
``"hard"``; ``"easy"`` is exactly that order reversed. So keeping the k easiest and the n - k
hardest partitions a class, ties included.
"""

from __future__ import annotations

import torch

KEEPS = ("hard", "easy")


def rank_rows(scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` (indices into ``scores``) from hardest to easiest: descending score, ties by
    ascending row (a stable sort of the sorted rows)."""
    rows = torch.sort(rows.reshape(-1)).values
    return rows[torch.argsort(scores[rows].to(torch.float64), descending=True, stable=True)]


def keep_by_score(scores: torch.Tensor, rows: torch.Tensor, k: int, keep: str = "hard") -> torch.Tensor:
    """The ``k`` rows of one class that ``scores`` ranks first, in rank order.

    ``keep="hard"``: the k highest scores; ``"easy"``: the k lowest (the hard ranking reversed).
    """
    if keep not in KEEPS:
        raise ValueError(f"keep must be one of {KEEPS}, got {keep!r}")
    ranked = rank_rows(scores, rows)
    if keep == "easy":
        ranked = ranked.flip(0)
    return ranked[: int(k)]
