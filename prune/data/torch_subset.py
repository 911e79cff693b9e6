"""PyTorch datasets as a target: a manifest's rows as a checked ``Subset``, and a sampler over gamma.

``checked_torch_subset`` (``Manifest.subset``) checks a map-style dataset against a manifest
(size, then the label fingerprint, as ``Manifest.apply`` does for Hugging Face datasets) and
returns ``torch.utils.data.Subset(dataset, indices)``; ``gamma_sampler`` (``Manifest.sampler``)
draws positions in that subset with probability proportional to their weights gamma.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset, WeightedRandomSampler

from prune.data.labels import label_fingerprint
from prune.errors import PruneError


def dataset_labels(dataset) -> np.ndarray:
    """The labels of a map-style dataset in order: its ``targets`` (torchvision), a
    ``TensorDataset``'s second tensor, else ``dataset[i][1]`` for every i (which loads every example)."""
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, TensorDataset) and len(dataset.tensors) > 1:
        targets = dataset.tensors[1]
    if targets is None:
        targets = [dataset[i][1] for i in range(len(dataset))]
    return torch.as_tensor(targets).reshape(-1).numpy()


def checked_torch_subset(manifest, dataset, *, labels=None, force: bool = False) -> Subset:
    """``Manifest.subset``: check the size and labels of ``dataset``, then ``Subset`` of the manifest's indices."""
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise PruneError(f"Manifest.subset takes a map-style dataset (with __len__ and __getitem__), "
                         f"got {type(dataset).__name__}")
    if len(dataset) != manifest.dataset["num_examples"]:
        warning = manifest.check_dataset(fingerprint="", num_examples=len(dataset), force=force)
    else:
        labels = np.asarray(dataset_labels(dataset) if labels is None else labels)
        if labels.ndim != 1 or len(labels) != len(dataset):
            raise PruneError(f"labels must hold one label per example ({len(dataset)}), got shape {labels.shape}")
        counts = np.bincount(labels[labels >= 0].astype(np.int64), minlength=manifest.dataset["num_classes"]).tolist()
        warning = manifest.check_dataset(fingerprint=label_fingerprint(labels), num_examples=len(labels),
                                         force=force, class_counts=counts)
    if warning:
        warnings.warn(warning, UserWarning, stacklevel=3)
    return Subset(dataset, manifest.indices.tolist())


def gamma_sampler(manifest, num_samples: int | None = None, *, replacement: bool = True,
                  generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """``Manifest.sampler``: positions 0..k-1 of ``Manifest.subset``, drawn with probability gamma_i / sum gamma."""
    if not len(manifest) or not manifest.weights.sum() > 0:
        raise PruneError("the manifest has no example with a positive weight gamma to sample from")
    return WeightedRandomSampler(manifest.weights.tolist(), len(manifest) if num_samples is None else num_samples,
                                 replacement=replacement, generator=generator)
