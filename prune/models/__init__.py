"""Models: classifiers with a linear head over an embedding, so last-layer features come in closed form."""

from prune.models.architectures import MODELS, Classifier, build_model, default_model

__all__ = ["MODELS", "Classifier", "build_model", "default_model"]
