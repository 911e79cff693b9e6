"""Per-sample last-layer quantities in closed form, from one forward pass's logits and embedding.

The notation, used by every module of ``prune.features``, follows ``methods.md`` ("Notation",
"Per-sample features"):

* ``h``  — penultimate embedding, shape (n, e); ``h~ = [h; 1]`` folds the bias in.
* ``z``  — logits ``z = W h + b``, shape (n, C); ``p = softmax(z)``.
* ``g``  — logit gradient of the per-sample cross-entropy, ``g = p - onehot(y)``, shape (n, C).
* ``a``  — diagonal of the logit Hessian ``A = diag(p) - p p^T``: ``a = p (1 - p)``, shape (n, C).
* ``G``  — last-layer parameter gradient ``G = g (x) h~``, shape (n, C (e + 1)).
* ``lambda`` — diagonal of the last-layer parameter Hessian, ``lambda_(c,j) = a_c h~_j^2``.

Flattened last-layer vectors use the ordering ``(c, j)`` row-major, ``j = e`` being the bias:
coordinate ``c * (e + 1) + j`` is ``W[c, j]`` for ``j < e`` and ``b[c]`` for ``j = e``.

**Never materialise G** in selection code: ``<G_i, G_j> = <g_i, g_j> <h~_i, h~_j>``, so pairwise
distances need only ``g`` (n x C) and ``h~`` (n x (e + 1)); :func:`last_layer_grad` and
:func:`last_layer_hess_diag` build the full (n, C (e + 1)) arrays and exist for tests and small n
only.

The model interface: ``model.embed(x) -> h`` of shape (n, e) and ``model.fc`` an ``nn.Linear(e, C)``
with ``model(x) == model.fc(model.embed(x))``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prune.errors import PruneError

__all__ = ["check_logits_labels", "logit_quantities", "with_bias", "last_layer_grad", "last_layer_hess_diag"]


def check_logits_labels(logits: Tensor, labels: Tensor) -> None:
    """Raise ``PruneError`` unless ``logits`` is (n, C) and ``labels`` is (n,)."""
    if logits.dim() != 2:
        raise PruneError(f"logits must have shape (n, C), got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1]:
        raise PruneError(
            f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}"
        )


def logit_quantities(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Closed-form per-sample logit gradient, logit Hessian diagonal and loss.

    Args:
        logits: (n, C) logits ``z``.
        labels: (n,) integer class labels.

    Returns:
        ``(g, a, loss)``: ``g = softmax(z) - onehot(y)`` (n, C); ``a = p (1 - p)`` (n, C), the
        diagonal of ``diag(p) - p p^T``; ``loss`` (n,), the per-sample cross-entropy (no
        reduction, so the values do not depend on the batch size).
    """
    check_logits_labels(logits, labels)
    labels = labels.long()
    logp = torch.log_softmax(logits, dim=1)
    p = logp.exp()
    g = p.clone()
    rows = torch.arange(logits.shape[0], device=logits.device)
    g[rows, labels] -= 1.0
    a = p * (1.0 - p)
    loss = -logp.gather(1, labels[:, None]).squeeze(1)
    return g, a, loss


def with_bias(embedding: Tensor) -> Tensor:
    """``h~ = [h; 1]``: the embedding with a trailing column of ones, (n, e + 1)."""
    ones = torch.ones(
        embedding.shape[0], 1, dtype=embedding.dtype, device=embedding.device
    )
    return torch.cat([embedding, ones], dim=1)


def last_layer_grad(grad_logit: Tensor, embedding: Tensor) -> Tensor:
    """Per-sample gradient of the loss w.r.t. the last linear layer, ``G = g (x) h~``.

    Returns an (n, C (e + 1)) tensor, ordering ``(c, j)`` row-major with ``j = e`` the bias.

    For tests and small n only: selection never materialises G (methods.md, "Never
    materialise G"); distances factor through ``g`` and ``h~``.
    """
    ht = with_bias(embedding)
    n = grad_logit.shape[0]
    return (grad_logit[:, :, None] * ht[:, None, :]).reshape(n, -1)


def last_layer_hess_diag(hess_logit: Tensor, embedding: Tensor) -> Tensor:
    """Diagonal of the per-sample Hessian w.r.t. the last linear layer.

    ``lambda_(c,j) = a_c * h~_j^2``, (n, C (e + 1)), same ordering as :func:`last_layer_grad`.
    It is exact: the Hessian w.r.t. ``(W, b)`` is ``A (x) h~ h~^T`` whose diagonal is this.
    Like :func:`last_layer_grad`, it builds an (n, C (e + 1)) array; use it for small n or for a
    subset of coordinates.
    """
    ht = with_bias(embedding)
    n = hess_logit.shape[0]
    return (hess_logit[:, :, None] * (ht * ht)[:, None, :]).reshape(n, -1)
