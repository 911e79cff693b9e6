"""Checkpoints (``--checkpoint PATH``): a state dict read with ``weights_only=True`` and loaded, shapes checked.

A file holds a state dict, or a dict with one under ``state_dict``, ``model_state_dict`` or
``model`` (a ``module.`` prefix, as ``DataParallel`` writes, is dropped). A torchvision model
takes either prune's layout (what ``prune train --save-model`` writes) or torchvision's own
(``torchvision.models.NAME().state_dict()``). A head with another number of classes is left
fresh (a note says so); any other difference is a ``PruneError`` naming the parameter.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
from torch import nn

from prune.errors import PruneError
from prune.models.torchvision_models import TorchvisionClassifier

_NESTED = ("state_dict", "model_state_dict", "model")


def checkpoint_record(path) -> dict:
    """What identifies a checkpoint in stores and manifests: its absolute path and SHA-256."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise PruneError(f"checkpoint {path} does not exist; check --checkpoint")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest()}


def read_state(path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (CPU tensors)."""
    path = Path(path).expanduser()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise PruneError(f"checkpoint {path} holds more than weights, which prune does not load ({first[:120]}); "
                         "save model.state_dict() with torch.save") from None
    except Exception as err:  # a file that is not torch.save's fails in the unpickler in any number of ways
        raise PruneError(f"cannot read checkpoint {path} ({type(err).__name__}: {str(err)[:120]}); "
                         "it must be written by torch.save") from None
    state = raw
    if isinstance(raw, dict):
        for key in _NESTED:
            if isinstance(raw.get(key), dict):
                state = raw[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PruneError(f"checkpoint {path} holds no state dict (a dict of tensors, or one under "
                         f"{', '.join(_NESTED)}); save model.state_dict() with torch.save")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _prune_layout(model: nn.Module, state: dict) -> dict:
    """Keys of torchvision's own layout renamed to the classifier's (``body.*`` and the head ``fc.*``)."""
    if not isinstance(model, TorchvisionClassifier) or any(key.startswith("body.") for key in state):
        return state
    head = model.head + "."
    return {("fc." + key[len(head):]) if key.startswith(head) else "body." + key: value
            for key, value in state.items()}


def load_checkpoint(model: nn.Module, path, note=print) -> None:
    """Load the checkpoint at ``path`` into ``model`` after checking names and shapes."""
    state = _prune_layout(model, read_state(path))
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if missing or unexpected:
        parts = [f"{label} {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                 for label, keys in (("lacks", missing), ("has unknown", unexpected)) if keys]
        raise PruneError(f"checkpoint {path} does not fit this model: it {' and '.join(parts)}; "
                         "save it from the same --model (the same architecture)")
    wrong = [key for key in own if tuple(state[key].shape) != tuple(own[key].shape)]
    if wrong and all(key.startswith("fc.") for key in wrong):
        note(f"checkpoint {path} has a head for {state['fc.weight'].shape[0]} classes, the data have "
             f"{own['fc.weight'].shape[0]}: the head starts fresh, the rest is loaded")
        state = {key: (own[key] if key in wrong else value) for key, value in state.items()}
    elif wrong:
        key = wrong[0]
        raise PruneError(f"checkpoint {path} does not fit this model: {key} has shape {tuple(state[key].shape)}, "
                         f"the model needs {tuple(own[key].shape)}; save it from the same --model and data "
                         "(channels, classes)")
    model.load_state_dict(state)
