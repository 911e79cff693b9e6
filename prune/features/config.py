"""What determines a store's content: ``PosteriorConfig`` (posterior sampling and curvature) and
``FeatureConfig`` (the model, its warm-up and the posterior, resolved for one data set).

Each default and each check of these settings lives here, checked once, at construction;
``prune.config`` re-exports ``PosteriorConfig`` and builds a ``FeatureConfig`` from its
``WarmupConfig`` (``feature_config``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prune.errors import PruneError
from prune.features.posterior import POSTERIOR_LAYERS
from prune.training import TrainConfig

#: how the M posterior samples are drawn: Gaussian weight noise, the noise scaled by the Hessian, or M seeds
POSTERIOR_KINDS = ("gaussian", "hessian", "seeds")
#: how ``hess_logit`` is computed: in closed form, or by Hutchinson probes
HESSIANS = ("exact", "hutchinson")
#: the storage types of a store's features
DTYPES = ("float32", "float16")


#: the messages name the options' flags; a Python caller reads the parameters' names (``prune.errors.PruneError``)
PARAMETERS = {"--posterior-samples": "samples", "--posterior-sigma": "sigma", "--posterior-layers": "layers",
              "--posterior-kind": "kind"}


def _whole(flag: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PruneError(f"{flag} must be a whole number >= {low}, got {value!r}", parameters=PARAMETERS)


@dataclass(frozen=True)
class PosteriorConfig:
    """Posterior sampling (M ``samples`` of Gaussian weight noise of std ``sigma`` on ``layers``) and curvature.

    ``samples`` 1 means no posterior sampling (the warm weights only). ``kind`` "hessian" scales the
    noise by the Hessian, "seeds" warms up M models instead; ``hessian`` "hutchinson" estimates the
    logit Hessian diagonal with ``hutchinson_samples`` probes (ablations of the papers).
    """

    samples: int = 4
    sigma: float = 0.01
    layers: str = "bn"
    kind: str = "gaussian"
    hessian: str = "exact"
    hutchinson_samples: int = 100

    def __post_init__(self):
        _whole("--posterior-samples", self.samples)
        _whole("--hutchinson-samples", self.hutchinson_samples)
        sigma = self.sigma
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
            raise PruneError(f"--posterior-sigma must be a finite number >= 0, got {sigma!r}", parameters=PARAMETERS)
        for flag, value, known in (("--posterior-layers", self.layers, POSTERIOR_LAYERS),
                                   ("--posterior-kind", self.kind, POSTERIOR_KINDS), ("--hessian", self.hessian, HESSIANS)):
            if value not in known:
                raise PruneError(f"unknown {flag} {value!r}; choose one of: {', '.join(known)}",
                                 parameters=PARAMETERS)


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that determines a store's content besides the data and the seed.

    ``model`` the architecture's name (resolved: no default here), ``warmup`` the SGD run before the
    feature passes (``TrainConfig``: its epochs, learning rate, ...), ``posterior`` the M samples;
    ``beta1``/``beta2`` the checkpoint averages' rates (AdaCore eq. 7, 9), ``dtype`` the storage type,
    ``batch_size`` the feature passes' (features do not depend on it), ``checkpoint``
    (``prune.models.checkpoint_record``) the starting weights.
    """

    model: str
    warmup: TrainConfig
    posterior: PosteriorConfig = PosteriorConfig()
    beta1: float = 0.9
    beta2: float = 0.999
    dtype: str = "float32"
    batch_size: int = 1024
    checkpoint: dict | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise PruneError(f"unknown --dtype {self.dtype!r}; choose one of: {', '.join(DTYPES)}", parameters=True)
        _whole("batch_size", self.batch_size)  # the feature passes'; no option sets it

    @property
    def samples(self) -> int:
        """M, the posterior samples (1: the warm weights only)."""
        return self.posterior.samples

    @property
    def checkpoints(self) -> int:
        """T, the warm-up's checkpoint passes: one per epoch (the initial weights without warm-up)."""
        return max(self.warmup.epochs, 1)

    def to_dict(self) -> dict:
        """The store's ``features`` record (copied into manifests' ``model``): the posterior's fields
        flat, as ``posterior_*``, ``hessian`` and ``hutchinson_samples``; ``checkpoint`` only when given."""
        posterior = self.posterior
        out = {"model": self.model, "warmup": self.warmup.to_dict(), "posterior_samples": posterior.samples,
               "posterior_sigma": posterior.sigma, "posterior_layers": posterior.layers,
               "posterior_kind": posterior.kind, "hessian": posterior.hessian,
               "hutchinson_samples": posterior.hutchinson_samples, "beta1": self.beta1, "beta2": self.beta2,
               "dtype": self.dtype, "batch_size": self.batch_size}
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint
        return out
