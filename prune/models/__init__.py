"""Models: classifiers with a linear head ``fc`` over an embedding, and access to that head.

``architectures`` (MLP, LeNet, ResNets; ``build_model``, ``default_model``), ``torchvision_models``
(``torchvision:NAME``), ``checkpoint`` (``--checkpoint``: read, check, load), ``last_layer``
(the head, its parameters, its matrix), ``modes`` (eval mode for a block).
"""

from prune.models.architectures import MODELS, Classifier, build_model, default_model
from prune.models.checkpoint import checkpoint_record, load_checkpoint
from prune.models.last_layer import last_layer, last_layer_matrix, last_layer_parameters
from prune.models.modes import eval_mode

__all__ = ["MODELS", "Classifier", "build_model", "checkpoint_record", "default_model", "eval_mode", "load_checkpoint", "last_layer", "last_layer_matrix",
           "last_layer_parameters"]
