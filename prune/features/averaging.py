"""Bias-corrected exponential averages of per-sample features over the warm-up checkpoints."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from prune.errors import PruneError

__all__ = ["CheckpointAverage", "ema"]


class CheckpointAverage:
    """Streaming bias-corrected exponential averages over warm-up checkpoints.

    After checkpoints ``t = 1..T`` (methods.md, "Exponential averaging"; AdaCore eq. 7, 9):

    * ``grad = (1 - b1) sum_t b1^(T-t) g_t / (1 - b1^T)``
    * ``hess = sqrt((1 - b2) sum_t b2^(T-t) h_t^2 / (1 - b2^T))``

    Memory is one accumulator per quantity (O(n C)), not O(T n C). Internally it keeps
    ``S_T = sum_t b^(T-t) x_t`` and ``W_T = sum_t b^(T-t)`` and returns ``S_T / W_T``, which equals
    the formula above because ``(1 - b) W_T = 1 - b^T``, and makes T = 1 return the checkpoint
    exactly. Accumulation is in float64 (so ``h^2`` does not underflow for tiny curvatures);
    results come back in the dtype of the last update. With T = 1, ``hess`` is ``|h_1|`` (equal
    to ``h_1`` for the closed-form, non-negative diagonals; Hutchinson estimates can be negative).

    ``grad`` and ``hess`` may have any shape (e.g. (n, C), or (n, C (e + 1)) for lambda), fixed
    across updates. ``hess`` may be omitted (``None``) on every update.
    """

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999) -> None:
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise PruneError(f"{name} must be in [0, 1), got {b}")
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.count = 0
        self._g: Tensor | None = None
        self._h2: Tensor | None = None
        self._wg = 0.0
        self._wh = 0.0
        self._g_dtype: torch.dtype | None = None
        self._h_dtype: torch.dtype | None = None

    def update(self, grad: Tensor, hess: Tensor | None = None) -> None:
        """Add one checkpoint's ``grad`` (and optionally ``hess``) features."""
        if (hess is None) != (self._h2 is None) and self.count > 0:
            raise PruneError("CheckpointAverage: give hess on every update or on none")
        if self._g is not None and grad.shape != self._g.shape:
            raise PruneError(
                f"CheckpointAverage: grad shape changed from {tuple(self._g.shape)} "
                f"to {tuple(grad.shape)}"
            )
        g64 = grad.detach().to(torch.float64)
        if self._g is None:
            self._g = g64.clone()
        else:
            self._g.mul_(self.beta1).add_(g64)
        self._wg = self.beta1 * self._wg + 1.0
        self._g_dtype = grad.dtype
        if hess is not None:
            if self._h2 is not None and hess.shape != self._h2.shape:
                raise PruneError(
                    f"CheckpointAverage: hess shape changed from {tuple(self._h2.shape)} "
                    f"to {tuple(hess.shape)}"
                )
            h64 = hess.detach().to(torch.float64)
            if self._h2 is None:
                self._h2 = h64 * h64
            else:
                self._h2.mul_(self.beta2).add_(h64 * h64)
            self._wh = self.beta2 * self._wh + 1.0
            self._h_dtype = hess.dtype
        self.count += 1

    @property
    def grad(self) -> Tensor:
        """Bias-corrected average of the gradients (g-bar)."""
        if self._g is None:
            raise PruneError("CheckpointAverage: no checkpoint added yet")
        return (self._g / self._wg).to(self._g_dtype)

    @property
    def hess(self) -> Tensor:
        """Bias-corrected root-mean-square of the Hessian diagonals (H-bar)."""
        if self._h2 is None:
            raise PruneError("CheckpointAverage: no Hessian checkpoint added")
        return torch.sqrt(self._h2 / self._wh).to(self._h_dtype)


def ema(
    checkpoints: Sequence[Tensor], beta: float = 0.9, *, square: bool = False
) -> Tensor:
    """Direct (non-streaming) bias-corrected average over a list of checkpoints.

    ``square=False``: ``(1 - b) sum_t b^(T-t) x_t / (1 - b^T)`` (g-bar, use ``beta=0.9``);
    ``square=True``: ``sqrt((1 - b) sum_t b^(T-t) x_t^2 / (1 - b^T))`` (H-bar, use ``beta=0.999``).
    Holds all T checkpoints; prefer :class:`CheckpointAverage` for real runs.
    """
    if len(checkpoints) == 0:
        raise PruneError("ema: no checkpoints")
    t_total = len(checkpoints)
    acc = torch.zeros_like(checkpoints[0], dtype=torch.float64)
    for t, x in enumerate(checkpoints, start=1):
        x64 = x.detach().to(torch.float64)
        acc += beta ** (t_total - t) * (x64 * x64 if square else x64)
    out = (1.0 - beta) * acc / (1.0 - beta**t_total)
    if square:
        out = out.sqrt()
    return out.to(checkpoints[-1].dtype)
