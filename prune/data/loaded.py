"""The form every source produces: ``LoadedData``, two normalised ``Split``s.

Normalisation (``from_arrays``): images are standardised per channel with the mean and
(population) standard deviation of the *training* split; feature vectors per feature, likewise
(a constant feature keeps std 1). Both splits use the training statistics, which are kept in
``LoadedData.mean`` / ``LoadedData.std`` in the source's raw units (0..255 pixels, 0..16 for
digits), so ``x * std + mean`` gives the raw values back. ``channels_first`` is the one image
layout rule the npz and hf: sources share. A split's ``x`` is a float32 tensor, or for the
streamed sources (folder:, hf: images, CIFAR) a ``prune.data.streaming.LazyImages``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from prune.data.labels import label_fingerprint


@dataclass(frozen=True)
class Split:
    """One split: ``x`` float32 (N x C x H x W images or N x D vectors), ``y`` int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"Split has {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class LoadedData:
    """A dataset ready for training: normalised train and test splits."""

    source: str
    train: Split
    test: Split
    num_classes: int
    # training statistics used to normalise, in raw units (per channel / per feature)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # the source's split used for training, and (hf: only) the columns read: role -> name
    split: str = "train"
    columns: dict | None = field(default=None, hash=False)
    # the source's split held out as ``test`` (None: nothing is held out, ``test`` is empty)
    eval_split: str | None = "test"
    # folder: only: classes, image size, skipped files, the file list's fingerprint (prune.data.folder)
    details: dict | None = field(default=None, hash=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def fingerprint(self) -> str:
        return label_fingerprint(self.train.y)

    def record(self) -> dict:
        """The training split's provenance as manifests and feature stores keep it."""
        counts = torch.bincount(self.train.y, minlength=self.num_classes).tolist()
        record = {"source": self.source, "split": self.split, "num_examples": len(self.train),
                  "num_classes": self.num_classes, "fingerprint": self.fingerprint, "class_counts": counts}
        if self.columns:
            record["columns"] = dict(self.columns)
        if self.details:
            record.update(self.details)
        return record


def take(split: Split, indices) -> Split:
    """The examples at ``indices`` (in that order) as a new ``Split``."""
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64).reshape(-1)
    return Split(split.x[idx], split.y[idx])


def from_arrays(source: str, x_train, y_train, x_test, y_test, num_classes: int) -> LoadedData:
    """Normalise with training statistics and wrap. ``x_*`` are numpy arrays, images NCHW."""
    xtr = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    xte = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32))
    if xtr.ndim == 4:  # images: per channel
        var, mean = torch.var_mean(xtr, dim=(0, 2, 3), correction=0)
        std = var.sqrt()
        shape = (1, -1, 1, 1)
    else:  # vectors: per feature, in float64 for accuracy
        var, mean = torch.var_mean(xtr.double(), dim=0, correction=0)
        std = var.sqrt()
        shape = (1, -1)
    std = torch.where(std > 0, std, torch.ones_like(std))
    m32, s32 = mean.float().view(shape), std.float().view(shape)
    xtr.sub_(m32).div_(s32)
    xte.sub_(m32).div_(s32)
    return LoadedData(
        source=source,
        train=Split(xtr, torch.from_numpy(np.array(y_train, dtype=np.int64))),
        test=Split(xte, torch.from_numpy(np.array(y_test, dtype=np.int64))),
        num_classes=int(num_classes),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )


def channels_first(x: np.ndarray) -> np.ndarray | None:
    """N x H x W, N x H x W x C or N x C x H x W (C in 1, 3, 4) -> N x C x H x W; None otherwise."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4):
            return x.transpose(0, 3, 1, 2)
        if x.shape[1] in (1, 3, 4):
            return x
    return None
