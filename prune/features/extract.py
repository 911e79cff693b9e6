"""Feature extraction: one forward pass over the data, per-sample features batch by batch.

Batched and device-agnostic: no per-sample autograd loops and no Python loops over examples
(the only loops are over batches and, for Hutchinson, over probe chunks).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prune.data.streaming import batches
from prune.errors import PruneError
from prune.features.closed_form import logit_quantities
from prune.features.hutchinson import cpu_generator, hutchinson_hess_logit
from prune.models.modes import eval_mode

__all__ = ["FEATURE_KEYS", "Hutchinson", "extract_batches", "extract_features"]

#: keys of the dictionaries yielded by :func:`extract_batches`
FEATURE_KEYS = ("grad_logit", "hess_logit", "embedding", "loss", "logits")


@dataclass(frozen=True)
class Hutchinson:
    """Estimate ``hess_logit`` with ``samples`` Rademacher probes drawn from ``generator`` (None: a CPU
    generator seeded 0) instead of computing it in closed form (``--hessian hutchinson``)."""

    samples: int = 100
    generator: torch.Generator | None = None


def _check_device(model: nn.Module, device: torch.device) -> None:
    p = next(iter(model.parameters()), None)
    if p is None:
        return
    if p.device.type != device.type or (
        device.index is not None and p.device.index is not None and p.device.index != device.index
    ):
        raise PruneError(f"the model is on {p.device} but features were asked on {device}")


def extract_batches(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    device: torch.device | str,
    hutchinson: Hutchinson | None = None,
    out_dtype: torch.dtype = torch.float32,
    amp: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """One pass over ``(x, y)``, yielding per-batch features in order.

    The model (already on ``device``) runs in eval mode: one forward per batch,
    ``h = model.embed(xb)`` then ``logits = model.fc(h)``, under ``torch.no_grad()``. Yields
    dictionaries of CPU tensors (``out_dtype``, float32 by default) with keys

    * ``"grad_logit"`` (b, C) ``p - onehot(y)``;
    * ``"hess_logit"`` (b, C) ``p (1 - p)``, or with ``hutchinson`` its Hutchinson estimate
      (grad is enabled for that small part only);
    * ``"embedding"`` (b, e) ``h`` (without the bias column);
    * ``"loss"`` (b,) per-sample cross-entropy;
    * ``"logits"`` (b, C).

    ``amp`` runs ``embed`` under bfloat16 autocast and the head in float32 on the float32 ``h``, so
    the closed forms stay exact for the embedding they are given.

    Features do not depend on ``batch_size`` (no mean-reduced loss anywhere). Each submodule's
    train/eval flag is restored when the iterator is exhausted or closed.
    """
    if batch_size < 1:
        raise PruneError(f"batch size must be >= 1, got {batch_size}")
    if x.shape[0] != y.shape[0]:
        raise PruneError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    device = torch.device(device)
    _check_device(model, device)
    generator = None if hutchinson is None else cpu_generator(hutchinson.generator)
    non_blocking = device.type == "cuda"
    plan = [slice(start, start + batch_size) for start in range(0, x.shape[0], batch_size)]
    with eval_mode(model):
        for index, xb in zip(plan, batches(x, plan, device)):
            yb = y[index].to(device, non_blocking=non_blocking).long()
            with torch.no_grad():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    h = model.embed(xb)
                h = h.to(model.fc.weight.dtype)  # autocast's bfloat16 back to the head's type
                logits = model.fc(h)
                g, a, loss = logit_quantities(logits, yb)
            if hutchinson is not None:
                a = hutchinson_hess_logit(logits, yb, hutchinson.samples, generator)
            out = {
                "grad_logit": g,
                "hess_logit": a,
                "embedding": h.reshape(h.shape[0], -1),
                "loss": loss,
                "logits": logits,
            }
            yield {k: v.detach().to(device="cpu", dtype=out_dtype) for k, v in out.items()}


def extract_features(model: nn.Module, x: Tensor, y: Tensor, **kwargs) -> dict[str, Tensor]:
    """:func:`extract_batches` concatenated over the whole pass (same keyword arguments)."""
    parts: dict[str, list[Tensor]] = {k: [] for k in FEATURE_KEYS}
    for batch in extract_batches(model, x, y, **kwargs):
        for k in FEATURE_KEYS:
            parts[k].append(batch[k])
    if not parts["loss"]:
        raise PruneError("no examples to extract features from")
    return {k: torch.cat(v) for k, v in parts.items()}
