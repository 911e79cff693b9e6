"""Features: warm-up, per-sample last-layer quantities, and the HDF5 store they are written to.

``config`` (``PosteriorConfig``, ``FeatureConfig``: what a store's content depends on),
``closed_form`` (g, a, h and the last-layer forms; the notation), ``hutchinson`` (Hessian
diagonal estimates), ``averaging`` (exponential averages over checkpoints), ``posterior``
(weight perturbations), ``extract`` (one pass over the data), ``build`` (warm-up and the
pipeline of ``prune features``), ``store`` (the HDF5 layout, ``FeatureStore``), ``partial``
(the resumable work folder).
"""

from prune.features.build import TrainingLabels, WarmUp, build_store, store_bytes, warm_up
from prune.features.closed_form import with_bias
from prune.features.config import DTYPES, HESSIANS, POSTERIOR_KINDS, FeatureConfig, PosteriorConfig
from prune.features.extract import Hutchinson, extract_batches, extract_features
from prune.features.partial import partial_path
from prune.features.posterior import POSTERIOR_LAYERS, perturbed, posterior_parameters
from prune.features.store import FeatureStore

__all__ = ["DTYPES", "HESSIANS", "POSTERIOR_KINDS", "POSTERIOR_LAYERS", "FeatureConfig", "FeatureStore", "Hutchinson",
           "PosteriorConfig", "TrainingLabels", "WarmUp", "build_store", "extract_batches", "extract_features",
           "partial_path", "perturbed", "posterior_parameters", "store_bytes", "warm_up", "with_bias"]

from prune.callable_module import make_callable  # noqa: E402  prune.features(...) is prune.api.features(...)

make_callable(__name__)
