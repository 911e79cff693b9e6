"""The HDF5 feature store: per-sample features written once, re-selected from many times.

Layout (schema ``prune.features/1``; n examples, M posterior samples, C classes, e embedding
width, T warm-up checkpoints):

====================  ==============  ===================================================
dataset               shape           content
====================  ==============  ===================================================
``labels``            (n,)            labels used for warm-up and selection (noisy if noise)
``grad_logit``        (n, M, C)       g = p - y at each posterior sample
``hess_logit``        (n, M, C)       a = p(1 - p) (or its Hutchinson estimate)
``embedding``         (n, M, e)       penultimate embedding h (the bias 1 is implicit)
``grad_logit_ema``    (n, C)          g-bar over the T checkpoints (AdaCore eq. 7)
``hess_logit_ema``    (n, C)          H-bar over the T checkpoints (AdaCore eq. 9)
``loss_per_epoch``    (n, T)          per-example loss at each checkpoint (CREST §4.3)
``noise_flipped``     (f,)            indices whose label noise flipped (empty without noise)
====================  ==============  ===================================================

Why this and not ``grad_last``/``hess_last``: the last-layer quantities factor,
G = g (x) [h; 1] and lambda = a (x) [h; 1]^2, so storing g, a and h costs (2C + e) numbers
per sample instead of 2C(e+1) -- 20x smaller for LeNet on Fashion-MNIST -- and selection
computes distances from small Gram matrices instead (methods.md, "Never materialise G").

Attributes hold the schema, prune version, dataset source, fingerprint (of the clean labels),
num_classes, the dataset record manifests copy (``dataset``: split, class counts, hf: columns),
model, warm-up and posterior settings, seed and label-noise settings. Datasets are chunked by rows
and compressed with LZF. Features are computed into a resumable work folder (``prune.features.partial``)
and copied into the file, which is written under a temporary name and renamed when complete;
the ``complete`` attribute is set last. ``FeatureStore.open`` checks the schema, the attributes,
the shapes, the labels' range and that every feature is finite.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch

from prune import __version__
from prune.atomic import atomic_path
from prune.errors import PruneError

SCHEMA = "prune.features/1"
CHUNK_ROWS = 1024
PER_SAMPLE = ("grad_logit", "hess_logit", "embedding")


class StoreWriter:
    """Creates the datasets of a new store and fills them row block by row block."""

    def __init__(self, file: h5py.File, *, n: int, samples: int, num_classes: int, embedding_dim: int, checkpoints: int, dtype: str):
        self.file = file
        rows = min(n, CHUNK_ROWS)
        options = dict(compression="lzf", shuffle=True)
        width = {"grad_logit": num_classes, "hess_logit": num_classes, "embedding": embedding_dim}
        for name in PER_SAMPLE:
            # One chunk holds one posterior sample's rows, so the M passes never rewrite chunks.
            file.create_dataset(name, (n, samples, width[name]), dtype=dtype, chunks=(rows, 1, width[name]), **options)
        for name in ("grad_logit_ema", "hess_logit_ema"):
            file.create_dataset(name, (n, num_classes), dtype=dtype, chunks=(rows, num_classes), **options)
        file.create_dataset("loss_per_epoch", (n, checkpoints), dtype="float32", chunks=(rows, 1), **options)

    def write_rows(self, name: str, start: int, values: torch.Tensor, sample: int | None = None) -> None:
        stop = start + len(values)
        array = values.detach().cpu().numpy()
        if sample is None:
            self.file[name][start:stop] = array
        else:
            self.file[name][start:stop, sample] = array

    def write_column(self, name: str, column: int, values: torch.Tensor) -> None:
        self.file[name][:, column] = values.detach().cpu().numpy()


@contextmanager
def create_store(path: str | os.PathLike, *, labels: np.ndarray, flipped: np.ndarray, attrs: dict, **shape) -> Iterator[StoreWriter]:
    """Open a new store under a temporary name; it appears at ``path`` only when complete."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as file:
            file.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
            file.create_dataset("noise_flipped", data=np.asarray(flipped, dtype=np.int64))
            file.attrs["schema"] = SCHEMA
            file.attrs["prune_version"] = __version__
            for key, value in attrs.items():
                file.attrs[key] = json.dumps(value)
            yield StoreWriter(file, n=len(labels), **shape)
            file.attrs["complete"] = True


@dataclass
class FeatureStore:
    """A finished store opened for selection: everything read into memory as tensors."""

    path: Path
    meta: dict
    labels: torch.Tensor
    grad_logit: torch.Tensor
    hess_logit: torch.Tensor
    embedding: torch.Tensor
    grad_logit_ema: torch.Tensor
    hess_logit_ema: torch.Tensor
    loss_per_epoch: torch.Tensor
    noise_flipped: torch.Tensor

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return self.meta["num_classes"]

    @property
    def posterior_samples(self) -> int:
        return self.grad_logit.shape[1]

    @classmethod
    def open(cls, path: str | os.PathLike) -> "FeatureStore":
        """Open and check a store; wrong, old, truncated or partial files raise ``PruneError``."""
        path = Path(path)
        if path.is_dir():
            raise PruneError(f"feature store {path} is a folder, not an HDF5 file; pass the .h5 file `prune features --out` wrote")
        if not path.is_file():
            raise PruneError(f"feature store {path} does not exist; create it with `prune features --out {path}`")
        try:
            with h5py.File(path, "r") as file:
                schema = file.attrs.get("schema")
                if schema != SCHEMA:
                    raise PruneError(
                        f"feature store {path} has schema {schema!r}, this prune reads {SCHEMA!r}; "
                        "re-create it with `prune features`"
                    )
                if not file.attrs.get("complete", False):
                    raise PruneError(f"feature store {path} is incomplete (its writer was interrupted); re-create it with `prune features`")
                meta = {k: json.loads(v) for k, v in file.attrs.items() if k not in ("schema", "prune_version", "complete")}
                meta["prune_version"] = file.attrs["prune_version"]
                arrays = {name: torch.from_numpy(file[name][...]) for name in (
                    "labels", "noise_flipped", *PER_SAMPLE, "grad_logit_ema", "hess_logit_ema", "loss_per_epoch")}
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise PruneError(f"feature store {path} cannot be read ({err}); it may be truncated: re-create it with `prune features`") from None
        _check_contents(path, meta, arrays)
        for name in (*PER_SAMPLE, "grad_logit_ema", "hess_logit_ema", "loss_per_epoch"):
            arrays[name] = arrays[name].float()
            if not torch.isfinite(arrays[name]).all():
                bad = int((~torch.isfinite(arrays[name])).flatten(1).any(1).sum())
                raise PruneError(
                    f"feature store {path}: {name} has NaN or inf for {bad} examples (did warm-up diverge?); "
                    "re-create it with a lower --lr"
                )
        return cls(path=path, meta=meta, **arrays)

    def check_dataset(self, data) -> None:
        """Refuse ``data`` (a ``LoadedData``) other than the store was computed from.

        Says whether the size, the labels or only their order differ (``Manifest.check_dataset``).
        """
        from prune.manifest import dataset_mismatch

        record = dict(self.meta.get("dataset") or {
            "source": self.meta["dataset_source"], "num_examples": self.num_examples,
            "num_classes": self.num_classes, "fingerprint": self.meta["fingerprint"]})
        if "class_counts" not in record and not self.meta.get("label_noise"):  # older stores: the labels are clean
            record["class_counts"] = torch.bincount(self.labels, minlength=self.num_classes).tolist()
        counts = torch.bincount(data.train.y, minlength=data.num_classes).tolist()
        problem = dataset_mismatch(record, fingerprint=data.fingerprint, num_examples=len(data.train),
                                   class_counts=counts, what="store",
                                   files_fingerprint=data.record().get("files_fingerprint"))
        if problem:
            raise PruneError(f"feature store {self.path} was computed from {record['source']!r}, but the dataset "
                             f"given ({data.source!r}) does not match: {problem}; pass the dataset the store was "
                             "made from, or leave out --dataset (the store knows its data)")


_REQUIRED_ATTRS = ("fingerprint", "num_classes", "features", "seed")


def _check_contents(path: Path, meta: dict, arrays: dict) -> None:
    """Attributes present, shapes consistent, labels in 0..C-1; else ``PruneError``."""
    missing = [key for key in _REQUIRED_ATTRS if key not in meta]
    if "dataset" not in meta and "dataset_source" not in meta:
        missing.append("dataset_source")
    if missing:
        raise PruneError(f"feature store {path} lacks attribute(s) {', '.join(missing)}; it was not written by "
                         "`prune features` or is damaged: re-create it")
    n, classes = len(arrays["labels"]), meta["num_classes"]
    samples = arrays["grad_logit"].shape[1] if arrays["grad_logit"].ndim == 3 else None
    width = arrays["embedding"].shape[-1] if arrays["embedding"].ndim == 3 else None
    expected = {"labels": (n,), "grad_logit": (n, samples, classes), "hess_logit": (n, samples, classes),
                "embedding": (n, samples, width), "grad_logit_ema": (n, classes), "hess_logit_ema": (n, classes)}
    for name, shape in expected.items():
        if tuple(arrays[name].shape) != shape or samples is None or width is None:
            raise PruneError(f"feature store {path}: {name} has shape {tuple(arrays[name].shape)}, expected "
                             f"{shape} for {n} examples of {classes} classes; the file is damaged: re-create it")
    if arrays["loss_per_epoch"].ndim != 2 or arrays["loss_per_epoch"].shape[0] != n:
        raise PruneError(f"feature store {path}: loss_per_epoch has shape {tuple(arrays['loss_per_epoch'].shape)}, "
                         f"expected ({n}, T); the file is damaged: re-create it")
    labels = arrays["labels"]
    if n and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise PruneError(f"feature store {path}: labels run from {int(labels.min())} to {int(labels.max())}, "
                         f"outside 0..{classes - 1}; the file is damaged: re-create it")
