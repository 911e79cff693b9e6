"""PyTorch datasets as a target: a manifest's rows as a checked ``Subset``, and a sampler over gamma.

``checked_torch_subset`` (``Manifest.subset``) checks a map-style dataset against a manifest
(size, then the label fingerprint, as ``Manifest.apply`` does for Hugging Face datasets) and
returns ``torch.utils.data.Subset(dataset, indices)``; ``ManifestSampler`` (``Manifest.sampler``)
gives each rank its share of the manifest's indices into the whole dataset, per epoch.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import Sampler, Subset, TensorDataset

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


class ManifestSampler(Sampler[int]):
    """``Manifest.sampler``: the manifest's indices into the *full* dataset, each rank its share per epoch.

    As ``torch.utils.data.DistributedSampler`` does for a whole dataset: every epoch (``set_epoch``)
    the subset is shuffled by a generator seeded with ``seed + epoch`` (the same on every rank), padded
    by repeating its first indices to a multiple of ``num_replicas``, and rank r takes every
    ``num_replicas``-th index from position r. ``weighted`` draws the epoch's indices with replacement,
    with probability gamma_i / sum gamma (CRAIG's weights), instead of each index once.
    """

    def __init__(self, manifest, num_replicas: int | None = None, rank: int | None = None, *, shuffle: bool = True,
                 seed: int = 0, weighted: bool = False):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (
            torch.distributed.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise PruneError(f"rank must be in 0..{self.num_replicas - 1}, got {self.rank}")
        if weighted and not manifest.weights.sum() > 0:
            raise PruneError("the manifest has no example with a positive weight gamma to sample from")
        self.indices = torch.from_numpy(manifest.indices.astype(np.int64))
        self.weights = torch.from_numpy(manifest.weights.astype(np.float64)) if weighted else None
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.num_samples = -(-len(self.indices) // self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next iteration draws (call it before each epoch, as for DistributedSampler)."""
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, len(self.indices), replacement=True, generator=generator)
        elif self.shuffle:
            order = torch.randperm(len(self.indices), generator=generator)
        else:
            order = torch.arange(len(self.indices))
        total = self.num_samples * self.num_replicas
        order = torch.cat([order, order[: total - len(order)]]) if len(order) < total else order
        return iter(self.indices[order[self.rank:total:self.num_replicas]].tolist())

    def __len__(self) -> int:
        return self.num_samples
