"""Posterior sampling: the parameters perturbed, the noise scale, and the perturbation itself.

The "ensemble" features are computed at M weights ``w + delta_m`` drawn around the warm model
(methods.md, "ensemble"): ``posterior_parameters`` picks the group (BatchNorm affine, the last
layer, or all), ``hessian_noise_scale`` shapes the noise by curvature, and ``perturbed`` adds
one draw and removes it exactly afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from prune.errors import PruneError
from prune.features.hutchinson import hutchinson_param_hess_diag
from prune.models.last_layer import last_layer_parameters

__all__ = ["POSTERIOR_LAYERS", "CURVATURE_ROWS", "posterior_parameters", "curvature_batches", "hessian_noise_scale",
           "perturbed"]

#: the parameter groups ``posterior_parameters`` knows
POSTERIOR_LAYERS = ("bn", "fc", "all")

#: how many training rows the "hessian" posterior estimates curvature on
CURVATURE_ROWS = 2048

_BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


def posterior_parameters(model: nn.Module, layers: str) -> tuple[list[nn.Parameter], str]:
    """The parameter group perturbed by posterior sampling, and the group's name actually used.

    * ``"bn"``: affine weight and bias of every BatchNorm layer (``nn.BatchNorm1d/2d/3d``,
      ``SyncBatchNorm``). A model without affine BatchNorm falls back to ``"fc"``; the returned
      name is then ``"fc"`` so the caller can say so.
    * ``"fc"``: ``model.fc.weight`` and ``model.fc.bias`` (if it has one).
    * ``"all"``: every parameter of the model.
    """
    if layers == "bn":
        params: list[nn.Parameter] = []
        for module in model.modules():
            if isinstance(module, _BATCHNORM_TYPES) and module.affine:
                params.extend(p for p in (module.weight, module.bias) if p is not None)
        if params:
            return params, "bn"
        layers = "fc"
    if layers == "fc":
        return last_layer_parameters(model), "fc"
    if layers == "all":
        params = list(model.parameters())
        if not params:
            raise PruneError("the model has no parameters to perturb")
        return params, "all"
    raise PruneError(f"unknown posterior layers {layers!r}; choose bn, fc or all")


def curvature_batches(
    x: Tensor,
    labels: Tensor,
    generator: torch.Generator,
    device: torch.device | str,
    *,
    rows: int = CURVATURE_ROWS,
    batch_size: int = 256,
) -> list[tuple[Tensor, Tensor]]:
    """The mini-batches :func:`hessian_noise_scale` estimates curvature on: ``rows`` rows drawn
    from all of ``x`` without replacement (a permutation from ``generator``), in ascending order,
    ``batch_size`` at a time, on ``device``.

    A sample of every row, not the first ones: a class-ordered source (an image folder) would
    otherwise show the estimate one or two classes. With ``len(x) <= rows`` it is every row in order.
    """
    chosen = torch.randperm(len(labels), generator=generator)[:rows].sort().values
    return [(x[i].to(device), labels[i].to(device)) for i in chosen.split(batch_size)]


def hessian_noise_scale(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    batches: Iterable[tuple[Tensor, Tensor]],
    sigma: float,
    samples: int,
    generator: torch.Generator | None,
    *,
    clip: tuple[float, float] = (0.1, 10.0),
) -> list[Tensor]:
    """Per-element noise std for the "hessian" posterior (variance ~ inverse diagonal Hessian).

    ``h`` = :func:`hutchinson_param_hess_diag` (diagonal Hessian of the mean loss w.r.t.
    ``params``, over ``batches``). Hutchinson estimates (and Hessians of non-convex losses) can
    be negative, so the curvature used is ``|h|``. With ``m`` the mean of ``|h|`` over all
    elements of the whole group,

        ``std = sigma * sqrt(m / |h|)``, clipped to ``[0.1 sigma, 10 sigma]``,

    so an element of average curvature gets ``sigma``, flat directions (``h = 0``, e.g. dead
    units) get ``10 sigma`` and sharp ones at least ``0.1 sigma``. If every ``h`` is 0 all stds are
    ``sigma``. Returns one std tensor per parameter (same shape, device and dtype), for
    :func:`perturbed`.
    """
    if sigma < 0:
        raise PruneError(f"sigma must be >= 0, got {sigma}")
    h = hutchinson_param_hess_diag(model, params, batches, samples, generator)
    habs = [x.abs() for x in h]
    total = sum(float(x.to(torch.float64).sum()) for x in habs)
    count = sum(x.numel() for x in habs)
    m = total / max(count, 1)
    lo, hi = clip[0] * sigma, clip[1] * sigma
    if m == 0.0 or not math.isfinite(m):
        if not math.isfinite(m):
            raise PruneError("hessian noise scale: non-finite curvature estimate")
        return [torch.full_like(x, sigma) for x in habs]
    out = []
    for x in habs:
        # x == 0 gives inf, clipped to 10 sigma
        std = sigma * torch.sqrt(m / x)
        out.append(std.clamp(lo, hi))
    return out


@contextlib.contextmanager
def perturbed(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    sigma: float | Sequence[Tensor],
    generator: torch.Generator | None,
) -> Iterator[list[Tensor]]:
    """Temporarily add Gaussian noise ``delta ~ N(0, sigma^2)`` to ``params``.

    ``sigma`` is one float for every element (spherical posterior), or one std tensor per
    parameter (elementwise, e.g. from :func:`hessian_noise_scale`). The standard normal draws
    come from ``generator`` on the CPU (in float64 for float64 parameters, else float32) and are
    then moved to each parameter's device and dtype, so a CPU and a CUDA run draw the same
    numbers. The parameters are copied before and copied back afterwards — bit-exactly, also
    when the body raises. ``model`` is not otherwise touched (mode, buffers). Yields the list of
    deltas actually added.
    """
    params = list(params)
    if isinstance(sigma, (int, float)):
        if sigma < 0:
            raise PruneError(f"sigma must be >= 0, got {sigma}")
        stds: list[float | Tensor] = [float(sigma)] * len(params)
    else:
        stds = list(sigma)
        if len(stds) != len(params):
            raise PruneError(
                f"got {len(stds)} std tensors for {len(params)} perturbed parameters"
            )
    saved = [p.detach().clone() for p in params]
    deltas: list[Tensor] = []
    try:
        with torch.no_grad():
            for p, std in zip(params, stds):
                draw_dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
                eps = torch.randn(p.shape, generator=generator, dtype=draw_dtype)
                eps = eps.to(device=p.device, dtype=p.dtype)
                if isinstance(std, Tensor):
                    if std.shape != p.shape:
                        raise PruneError(
                            f"std shape {tuple(std.shape)} != parameter shape {tuple(p.shape)}"
                        )
                    delta = eps * std.to(device=p.device, dtype=p.dtype)
                else:
                    delta = eps * std
                p.add_(delta)
                deltas.append(delta)
        yield deltas
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
