"""Last-layer access: the linear head ``fc`` every prune model ends in (``Classifier``).

Per-sample last-layer features come in closed form from ``h = model.embed(x)`` and the logits
``model.fc(h)`` (``prune.features.closed_form``); posterior sampling may perturb the head
alone, and CREST's quadratic model tracks how the head moves.
"""

from __future__ import annotations

import torch
from torch import nn

from prune.errors import PruneError


def last_layer(model: nn.Module) -> nn.Linear:
    """``model.fc``, checked to be an ``nn.Linear``."""
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise PruneError("the model has no last linear layer `fc` (nn.Linear)")
    return fc


def last_layer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The head's weight and bias (if it has one)."""
    fc = last_layer(model)
    return [p for p in (fc.weight, fc.bias) if p is not None]


def last_layer_matrix(model: nn.Module) -> torch.Tensor:
    """The head as one (C, e + 1) float64 CPU matrix ``[W, b]`` (a copy; ``b = 0`` without a bias)."""
    fc = last_layer(model)
    bias = fc.bias if fc.bias is not None else torch.zeros(fc.out_features, device=fc.weight.device)
    return torch.cat([fc.weight.detach(), bias.detach()[:, None]], 1).double().cpu()
