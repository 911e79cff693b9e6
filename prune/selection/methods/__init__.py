"""Selection methods: each a small module over the shared protocol (``base.Method``), in one registry."""

from prune.features.store import POSTERIORS
from prune.selection.methods.base import (TOP_K_SCOPES, DistanceMethod, FieldMethod, Method, MethodConfig,
                                         SamplingMethod)
from prune.selection.methods.registry import METHODS, REGISTRY, method_class

__all__ = ["METHODS", "POSTERIORS", "REGISTRY", "TOP_K_SCOPES", "DistanceMethod", "FieldMethod", "Method",
           "MethodConfig", "SamplingMethod", "method_class"]
