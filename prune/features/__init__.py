"""Features: warm-up, per-sample last-layer quantities, and the HDF5 store they are written to."""

from prune.features.build import FeatureConfig, build_store, store_bytes, stream_seed
from prune.features.closed_form import extract_batches, extract_features, perturbed, posterior_parameters, with_bias
from prune.features.partial import partial_path
from prune.features.store import FeatureStore

__all__ = ["FeatureConfig", "FeatureStore", "build_store", "extract_batches", "extract_features", "partial_path",
           "perturbed", "posterior_parameters", "store_bytes", "stream_seed", "with_bias"]
