"""Hutchinson estimates of Hessian diagonals: of the logits (per sample) and of a parameter group.

``diag(H) ~ mean_s z_s * (H z_s)`` with Rademacher probes ``z_s``, each product ``H z`` by double
back-propagation. Probes are drawn on the CPU from a seeded generator and moved, so CPU and CUDA
runs use the same probes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune.errors import PruneError
from prune.features.closed_form import check_logits_labels
from prune.models.modes import eval_mode

__all__ = ["rademacher", "cpu_generator", "hutchinson_hess_logit", "hutchinson_param_hess_diag"]


def rademacher(
    shape: Sequence[int],
    generator: torch.Generator | None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """±1 entries drawn on the CPU from ``generator`` and moved to ``device``.

    Drawing on the CPU makes CPU and CUDA runs use the same probes for the same seed.
    """
    z = torch.randint(0, 2, tuple(shape), generator=generator, dtype=torch.int8)
    return (z.to(dtype) * 2 - 1).to(device)


def cpu_generator(generator: torch.Generator | None) -> torch.Generator:
    """The given generator, or a fresh CPU generator seeded with 0 (deterministic default)."""
    if generator is None:
        return torch.Generator().manual_seed(0)
    if generator.device.type != "cpu":
        raise PruneError("pass a CPU torch.Generator; noise is drawn on the CPU and moved")
    return generator


def hutchinson_hess_logit(
    logits: Tensor,
    labels: Tensor,
    samples: int,
    generator: torch.Generator | None,
    *,
    chunk: int = 64,
) -> Tensor:
    """Hutchinson estimate of the diagonal of the logit Hessian (CREST eq. 7, AdaCore eq. 8).

    ``diag(A) ~ mean_s z_s * (A z_s)`` with Rademacher probes ``z_s`` of shape (n, C) drawn on
    the CPU from ``generator``. ``A z`` comes from double back-propagation through the summed
    cross-entropy w.r.t. the logits: the per-sample losses are independent, so one backward of
    the sum gives every sample's Hessian-vector product at once. Probes are processed ``chunk``
    at a time with batched gradients (``is_grads_batched``). Works under ``torch.no_grad()``.

    Returns an (n, C) tensor (detached) with the dtype and device of ``logits``.
    """
    check_logits_labels(logits, labels)
    if samples < 1:
        raise PruneError(f"hutchinson samples must be >= 1, got {samples}")
    generator = cpu_generator(generator)
    n, c = logits.shape
    with torch.enable_grad():
        z = logits.detach().requires_grad_(True)
        loss = F.cross_entropy(z, labels.long(), reduction="sum")
        (grad,) = torch.autograd.grad(loss, z, create_graph=True)
        acc = torch.zeros_like(z, requires_grad=False)
        done = 0
        while done < samples:
            k = min(chunk, samples - done)
            v = rademacher((k, n, c), generator, dtype=z.dtype, device=z.device)
            (hv,) = torch.autograd.grad(
                grad, z, grad_outputs=v, retain_graph=True, is_grads_batched=True
            )
            acc += (v * hv).sum(0).detach()
            done += k
    return acc / samples


def hutchinson_param_hess_diag(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    batches: Iterable[tuple[Tensor, Tensor]],
    samples: int,
    generator: torch.Generator | None,
) -> list[Tensor]:
    """Hutchinson estimate of the diagonal Hessian of the mean cross-entropy w.r.t. ``params``.

    For each batch: ``l = mean_i CE(model(x_i), y_i)``, gradients w.r.t. ``params`` with
    ``create_graph=True``, then ``samples`` Hessian-vector products with Rademacher probes
    (drawn on the CPU from ``generator``) by double back-propagation; ``diag(H) ~ mean z * (H z)``.
    The result is averaged over probes and over batches (for equal-sized batches, the diagonal
    of the Hessian of the mean loss over all of them). The model runs in eval mode (BatchNorm
    uses its running statistics); its train/eval flags and ``requires_grad`` flags are restored.
    Returns one tensor per parameter, same shape, detached.
    """
    if samples < 1:
        raise PruneError(f"hutchinson samples must be >= 1, got {samples}")
    generator = cpu_generator(generator)
    params = list(params)
    flags = [p.requires_grad for p in params]
    acc = [torch.zeros_like(p, dtype=p.dtype).detach() for p in params]
    device = params[0].device
    n_batches = 0
    try:
        for p in params:
            p.requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            for xb, yb in batches:
                xb = xb.to(device)
                yb = yb.to(device).long()
                loss = F.cross_entropy(model(xb), yb)
                grads = torch.autograd.grad(
                    loss, params, create_graph=True, allow_unused=True, materialize_grads=True
                )
                for _ in range(samples):
                    probes = [
                        rademacher(p.shape, generator, dtype=p.dtype, device=p.device)
                        for p in params
                    ]
                    # a gradient that does not depend on the parameters has zero curvature
                    live = [i for i, g in enumerate(grads) if g.requires_grad]
                    if not live:
                        continue
                    hv = torch.autograd.grad(
                        [grads[i] for i in live],
                        params,
                        [probes[i] for i in live],
                        retain_graph=True,
                        allow_unused=True,
                        materialize_grads=True,
                    )
                    for a, v, h in zip(acc, probes, hv):
                        a += (v * h).detach()
                n_batches += 1
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    if n_batches == 0:
        raise PruneError("hessian noise scale: no batches given")
    return [a / (samples * n_batches) for a in acc]
