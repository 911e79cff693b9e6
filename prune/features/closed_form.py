"""Per-sample last-layer features: gradients, diagonal Hessians, their averages, posterior samples.

Everything here is batched and device-agnostic: no per-sample autograd loops and no Python loops
over examples (the only loops are over batches, over Hutchinson probe chunks and over parameter
tensors). The notation follows ``methods.md`` ("Notation", "Per-sample features"):

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

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune.errors import PruneError

__all__ = [
    "logit_quantities",
    "last_layer_grad",
    "last_layer_hess_diag",
    "with_bias",
    "rademacher",
    "hutchinson_hess_logit",
    "CheckpointAverage",
    "ema",
    "posterior_parameters",
    "hutchinson_param_hess_diag",
    "hessian_noise_scale",
    "perturbed",
    "extract_batches",
    "extract_features",
    "FEATURE_KEYS",
]

#: keys of the dictionaries yielded by :func:`extract_batches`
FEATURE_KEYS = ("grad_logit", "hess_logit", "embedding", "loss", "logits")

_BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


# --------------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------------


def _check_logits_labels(logits: Tensor, labels: Tensor) -> None:
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
    _check_logits_labels(logits, labels)
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


# --------------------------------------------------------------------------------------------
# Hutchinson estimates
# --------------------------------------------------------------------------------------------


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


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator:
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
    _check_logits_labels(logits, labels)
    if samples < 1:
        raise PruneError(f"hutchinson samples must be >= 1, got {samples}")
    generator = _cpu_generator(generator)
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


# --------------------------------------------------------------------------------------------
# Exponential averaging over checkpoints
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Posterior sampling
# --------------------------------------------------------------------------------------------


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
        fc = getattr(model, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise PruneError("the model has no last linear layer `fc` (nn.Linear)")
        return [p for p in (fc.weight, fc.bias) if p is not None], "fc"
    if layers == "all":
        params = list(model.parameters())
        if not params:
            raise PruneError("the model has no parameters to perturb")
        return params, "all"
    raise PruneError(f"unknown posterior layers {layers!r}; choose bn, fc or all")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each submodule's own flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


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
    generator = _cpu_generator(generator)
    params = list(params)
    flags = [p.requires_grad for p in params]
    acc = [torch.zeros_like(p, dtype=p.dtype).detach() for p in params]
    device = params[0].device
    n_batches = 0
    try:
        for p in params:
            p.requires_grad_(True)
        with _eval_mode(model), torch.enable_grad():
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


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


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
    hessian: str = "exact",
    hutchinson_samples: int = 100,
    generator: torch.Generator | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> Iterator[dict[str, Tensor]]:
    """One pass over ``(x, y)``, yielding per-batch features in order.

    The model (already on ``device``) runs in eval mode: one forward per batch,
    ``h = model.embed(xb)`` then ``logits = model.fc(h)``, under ``torch.no_grad()``. Yields
    dictionaries of CPU tensors (``out_dtype``, float32 by default) with keys

    * ``"grad_logit"`` (b, C) ``p - onehot(y)``;
    * ``"hess_logit"`` (b, C) ``p (1 - p)`` (``hessian="exact"``), or its Hutchinson estimate with
      ``hutchinson_samples`` probes from ``generator`` (``hessian="hutchinson"``; grad is
      enabled for that small part only; ``generator=None`` means a CPU generator seeded 0);
    * ``"embedding"`` (b, e) ``h`` (without the bias column);
    * ``"loss"`` (b,) per-sample cross-entropy;
    * ``"logits"`` (b, C).

    Features do not depend on ``batch_size`` (no mean-reduced loss anywhere). Each submodule's
    train/eval flag is restored when the iterator is exhausted or closed.
    """
    if batch_size < 1:
        raise PruneError(f"batch size must be >= 1, got {batch_size}")
    if hessian not in ("exact", "hutchinson"):
        raise PruneError(f"unknown hessian {hessian!r}; choose exact or hutchinson")
    if x.shape[0] != y.shape[0]:
        raise PruneError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    device = torch.device(device)
    _check_device(model, device)
    if hessian == "hutchinson":
        generator = _cpu_generator(generator)
    non_blocking = device.type == "cuda"
    n = x.shape[0]
    with _eval_mode(model):
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size].to(device, non_blocking=non_blocking)
            yb = y[start : start + batch_size].to(device, non_blocking=non_blocking).long()
            with torch.no_grad():
                h = model.embed(xb)
                logits = model.fc(h)
                g, a, loss = logit_quantities(logits, yb)
            if hessian == "hutchinson":
                a = hutchinson_hess_logit(logits, yb, hutchinson_samples, generator)
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
