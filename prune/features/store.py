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
``*_point``           (n, C) / (n, e) g, a and h at the unperturbed warm weights, when M > 1
                                      (with M = 1 the one sample is those weights)
``grad_logit_ema``    (n, C)          g-bar over the T checkpoints (AdaCore eq. 7)
``hess_logit_ema``    (n, C)          H-bar over the T checkpoints (AdaCore eq. 9)
``loss_per_epoch``    (n, T)          per-example loss at each checkpoint (CREST §4.3)
``prob_label_per_epoch`` (n, T)       p_y = softmax(z)_y at each checkpoint (DUAL)
``margin_per_epoch``  (n, T)          logit margin z_y - max_{c != y} z_c at each checkpoint (AUM)
``correct_per_epoch`` (n, T) uint8    1 where argmax_c z_c = y at each checkpoint (forgetting)
``noise_flipped``     (f,)            indices whose label noise flipped (empty without noise)
====================  ==============  ===================================================

The four ``*_per_epoch`` datasets are the warm-up's trajectory, one column per checkpoint pass
(the end of each of the T warm-up epochs; ``FeatureStore.prob_label``, ``margin``, ``correct`` read
them): the training-dynamics scores of the data-pruning literature (forgetting, AUM, DUAL) need
the path, not only its end. All are float32 but ``correct_per_epoch``.

Why this and not ``grad_last``/``hess_last``: the last-layer quantities factor,
G = g (x) [h; 1] and lambda = a (x) [h; 1]^2, so storing g, a and h costs (2C + e) numbers
per sample instead of 2C(e+1) -- 20x smaller for LeNet on Fashion-MNIST -- and selection
computes distances from small Gram matrices instead (methods.md, "Never materialise G").

Attributes hold the schema, prune version, fingerprint (of the clean labels), num_classes, the
dataset record manifests copy (``dataset``: source, split, class counts, hf: columns), model,
warm-up and posterior settings, seed and label-noise settings. Datasets are chunked by rows and
compressed with deflate (level 1, after byte shuffling): the same store is the same file, byte
for byte (LZF, whose hash table HDF5 leaves uninitialised, writes equal arrays as different
bytes). Features are computed into a resumable work folder (``prune.features.partial``)
and copied into the file, which is written under a temporary name and renamed when complete;
the ``complete`` attribute is set last. ``FeatureStore.open`` checks the schema, the attributes
(``prune.features.store_schema``), the shapes and the range of labels and flipped indices, and
reads nothing else: features are read by rows as selection needs them (a pool at a time), each
read checked to be finite and at most ``MAX_FEATURE`` in magnitude, naming the bad rows.
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
from prune.atomic import atomic_path, input_kind
from prune.errors import PruneError
from prune.data.labels import label_fingerprint
from prune.features import store_schema

SCHEMA = "prune.features/1"
CHUNK_ROWS = 1024
#: the largest feature magnitude a store may hold: far above what a converged warm-up gives (|g| <= 1,
#: a <= 1/4, embeddings of normalised data), and low enough that no method's distances overflow
MAX_FEATURE = 1e6
PER_SAMPLE = ("grad_logit", "hess_logit", "embedding")
POINT = tuple(f"{name}_point" for name in PER_SAMPLE)  # M > 1 only: the unperturbed weights' features
#: the warm-up's per-example records, (n, T) each: one column per checkpoint pass, and their dtypes
PER_EPOCH = {"loss_per_epoch": "float32", "prob_label_per_epoch": "float32", "margin_per_epoch": "float32",
             "correct_per_epoch": "uint8"}
POSTERIORS = ("point", "mean")  # a distance at the unperturbed weights, or its mean over the M samples
# HDF5's cache of decompressed chunks, per dataset: the pools of one class (CREST's subsets, the
# difficulty stage, lcmat's three arrays) read the same chunks again, from here
CHUNK_CACHE = 32 << 20


class StoreWriter:
    """Creates the datasets of a new store and fills them row block by row block."""

    def __init__(self, file: h5py.File, *, n: int, samples: int, num_classes: int, embedding_dim: int, checkpoints: int, dtype: str):
        self.file = file
        rows = min(n, CHUNK_ROWS)
        options = dict(compression="gzip", compression_opts=1, shuffle=True)
        width = {"grad_logit": num_classes, "hess_logit": num_classes, "embedding": embedding_dim}
        for name in PER_SAMPLE:
            # One chunk holds one posterior sample's rows, so the M passes never rewrite chunks.
            file.create_dataset(name, (n, samples, width[name]), dtype=dtype, chunks=(rows, 1, width[name]), **options)
            if samples > 1:
                file.create_dataset(f"{name}_point", (n, width[name]), dtype=dtype, chunks=(rows, width[name]), **options)
        for name in ("grad_logit_ema", "hess_logit_ema"):
            file.create_dataset(name, (n, num_classes), dtype=dtype, chunks=(rows, num_classes), **options)
        for name, kind in PER_EPOCH.items():
            file.create_dataset(name, (n, checkpoints), dtype=kind, chunks=(rows, 1), **options)

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


class StoredRows:
    """One per-example dataset of an open store, read only where indexed.

    ``array[rows]`` (a tensor, array or list of row indices) reads just those rows, in
    ``CHUNK_ROWS``-aligned slabs of the rows' range, as float32; any other index (``array[:]``,
    ``array[:, -1]``) reads the whole dataset first. Every read is checked to be finite and at
    most ``MAX_FEATURE`` in magnitude, and the message names the bad rows. Other tensor
    attributes (``.double()``, ``.to(...)``) act on the whole dataset, read. With
    ``sample_axis`` an (n, w) dataset reads as (n, 1, w): the point features as one posterior sample.
    """

    def __init__(self, path: Path, file: h5py.File, name: str, sample_axis: bool = False):
        self.path, self.file, self.name, self.sample_axis = path, file, name, sample_axis
        self.dataset = file[name]
        shape = self.dataset.shape
        self.shape = torch.Size((*shape[:1], 1, *shape[1:]) if sample_axis else shape)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def numel(self) -> int:
        return self.shape.numel()

    def element_size(self) -> int:
        return 4  # read as float32

    def with_sample_axis(self) -> "StoredRows":
        return StoredRows(self.path, self.file, self.name, sample_axis=True)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (torch.Tensor, np.ndarray, list)) and np.asarray(index).dtype.kind in "iu":
            return self.rows(torch.as_tensor(index, dtype=torch.int64))
        return self.rows(torch.arange(len(self)))[index]

    def __getattr__(self, name):
        if name.startswith("__") or name in ("path", "file", "name", "sample_axis", "dataset", "shape", "ndim"):
            raise AttributeError(name)
        return getattr(self[:], name)

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """float32 (len(rows), ...) of these rows, in their order; ``PruneError`` if unreadable, not finite or too large."""
        wanted, inverse = np.unique(rows.numpy(), return_inverse=True)
        out = torch.empty((len(wanted), *self.dataset.shape[1:]), dtype=torch.float32)
        step = self.dataset.chunks[0] if self.dataset.chunks else CHUNK_ROWS
        try:
            at = 0
            while at < len(wanted):
                start = wanted[at] // step * step
                stop = min(start + step, len(self))
                upto = np.searchsorted(wanted, stop, side="left")
                slab = self.dataset[start:stop]
                out[at:upto] = torch.from_numpy(slab[wanted[at:upto] - start])
                at = upto
        except (OSError, ValueError, IndexError, TypeError) as err:
            raise PruneError(f"feature store {self.path} cannot be read ({err}); it may be truncated: re-create it "
                             "with `prune features`") from None
        _checked_values(self.path, self.name, wanted, out)
        return out[torch.from_numpy(inverse).reshape(-1)].reshape(len(rows), *self.shape[1:])


@dataclass
class FeatureStore:
    """A finished store opened for selection: labels in memory, features read by rows as needed.

    The feature attributes are ``StoredRows`` for an opened file (tensors work too): index them
    with the rows of a pool to read just those rows.
    """

    path: Path
    meta: dict
    labels: torch.Tensor
    grad_logit: torch.Tensor | StoredRows
    hess_logit: torch.Tensor | StoredRows
    embedding: torch.Tensor | StoredRows
    grad_logit_ema: torch.Tensor | StoredRows
    hess_logit_ema: torch.Tensor | StoredRows
    loss_per_epoch: torch.Tensor | StoredRows
    prob_label_per_epoch: torch.Tensor | StoredRows
    margin_per_epoch: torch.Tensor | StoredRows
    correct_per_epoch: torch.Tensor | StoredRows
    noise_flipped: torch.Tensor
    # the unperturbed weights' features, (n, C) / (n, e); None with M = 1 (the one sample is those)
    grad_logit_point: torch.Tensor | StoredRows | None = None
    hess_logit_point: torch.Tensor | StoredRows | None = None
    embedding_point: torch.Tensor | StoredRows | None = None

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return self.meta["num_classes"]

    @property
    def posterior_samples(self) -> int:
        return self.grad_logit.shape[1]

    @property
    def checkpoints(self) -> int:
        """T, the warm-up checkpoints the ``*_per_epoch`` records have a column for."""
        return self.loss_per_epoch.shape[1]

    def prob_label(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(len(rows), T) float32 p_y = softmax(z)_y of each example (all of them without ``rows``) at
        each warm-up checkpoint: DUAL's difficulty and uncertainty come from its path (Cho et al. 2025, the DUAL score)."""
        return _read_rows(self.prob_label_per_epoch, rows)

    def margin(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(len(rows), T) float32 logit margin z_y - max_{c != y} z_c at each warm-up checkpoint: its mean
        over the checkpoints is the area under the margin (Pleiss et al. 2020, eq. 1-2); negative where
        another class's logit is larger."""
        return _read_rows(self.margin_per_epoch, rows)

    def correct(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(len(rows), T) bool: argmax_c z_c = y at each warm-up checkpoint (ties: the lowest class), the
        accuracy whose transitions from 1 to 0 are forgetting events (Toneva et al. 2019, §3)."""
        return _read_rows(self.correct_per_epoch, rows) != 0

    def posterior_features(self, posterior: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(grad_logit, hess_logit, embedding), each (n, M', width): the M posterior samples
        (``"mean"``) or the unperturbed weights' features (``"point"``, M' = 1)."""
        samples = (self.grad_logit, self.hess_logit, self.embedding)
        if posterior == "mean":
            if self.posterior_samples < 2:
                raise PruneError(f"--posterior mean needs posterior samples, but {self.path} has M = 1; create the "
                                 "store with `prune features --posterior-samples 4`")
            return samples
        if self.posterior_samples == 1:
            return samples
        return tuple(with_sample_axis(values) for values in (self.grad_logit_point, self.hess_logit_point,
                                                               self.embedding_point))

    def close(self) -> None:
        """Close the store's file (its ``StoredRows`` can then no longer be read); closing twice does nothing."""
        for values in vars(self).values():
            if isinstance(values, StoredRows):
                values.file.close()
                return

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def open(cls, path: str | os.PathLike) -> "FeatureStore":
        """Open and check a store (reading its labels only); wrong, old, truncated or partial files raise ``PruneError``.

        ``with FeatureStore.open(path) as store:`` closes the file at the end of the block (``close``).
        """
        path = Path(path)
        kind = input_kind(path, "feature store")
        if kind not in ("file", None):
            raise PruneError(f"feature store {path} is a {kind}, not an HDF5 file; pass the .h5 file `prune features --out` wrote")
        if kind is None:
            raise PruneError(f"feature store {path} does not exist; create it with `prune features --out {path}`")
        try:
            file = h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE, rdcc_nslots=100_003)
        except (OSError, ValueError) as err:
            raise PruneError(f"feature store {path} cannot be read ({err}); it may be truncated: re-create it with `prune features`") from None
        try:
            meta, arrays = _contents(path, file)
        except BaseException:
            file.close()
            raise
        return cls(path=path, meta=meta, **arrays)

    def check_dataset(self, data) -> None:
        """Refuse ``data`` (a ``LoadedData``) other than the store was computed from.

        Says whether the size, the labels or only their order differ (``Manifest.check_dataset``).
        """
        from prune.manifest import dataset_mismatch

        record = self.meta["dataset"]
        counts = torch.bincount(data.train.y, minlength=data.num_classes).tolist()
        problem = dataset_mismatch(record, fingerprint=data.fingerprint, num_examples=len(data.train),
                                   class_counts=counts, what="store",
                                   files_fingerprint=data.record().get("files_fingerprint"))
        if problem:
            raise PruneError(f"feature store {self.path} was computed from {record['source']!r}, but the dataset "
                             f"given ({data.source!r}) does not match: {problem}; pass the dataset the store was "
                             "made from, or leave out --dataset (the store knows its data)")


def _contents(path: Path, file: h5py.File) -> tuple[dict, dict]:
    """The checked attributes and arrays of an open store: labels and flipped indices read, the rest ``StoredRows``."""
    try:
        schema = file.attrs.get("schema")
        if schema != SCHEMA:
            raise PruneError(
                f"feature store {path} has schema {schema!r}, this prune reads {SCHEMA!r}; "
                "re-create it with `prune features`"
            )
        complete = file.attrs.get("complete", False)
        if not isinstance(complete, (bool, np.bool_)) or not complete:
            raise PruneError(f"feature store {path} is incomplete (its writer was interrupted); re-create it with `prune features`")
        attrs = {k: v for k, v in file.attrs.items() if k not in ("schema", "prune_version", "complete")}
        prune_version = file.attrs["prune_version"]
        required = ("labels", "noise_flipped", *PER_SAMPLE, "grad_logit_ema", "hess_logit_ema", *PER_EPOCH)
        missing = [name for name in required if name not in file]
        if missing:
            raise PruneError(f"feature store {path} lacks the dataset(s) {', '.join(missing)}; it was not written by "
                             "`prune features` or is damaged: re-create it")
        arrays = {name: torch.from_numpy(file[name][...]) for name in ("labels", "noise_flipped")}
        for name in required[2:] + tuple(name for name in POINT if name in file):
            arrays[name] = StoredRows(path, file, name)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise PruneError(f"feature store {path} cannot be read ({err}); it may be truncated: re-create it with `prune features`") from None
    meta = {**_decoded(path, attrs), "prune_version": prune_version}
    _check_contents(path, meta, arrays)
    return meta, arrays


def _checked_values(path: Path, name: str, rows: np.ndarray, values: torch.Tensor) -> torch.Tensor:
    """``values`` (of ``rows``) if finite and at most ``MAX_FEATURE`` in magnitude; else ``PruneError`` naming the rows."""
    if values.numel() == 0:
        return values
    low, high = (float(bound) for bound in torch.aminmax(values))  # one pass; NaN fails both comparisons
    if -MAX_FEATURE <= low and high <= MAX_FEATURE:
        return values
    flat = values.flatten(1)
    nonfinite = ~torch.isfinite(flat).all(1)
    if nonfinite.any():
        raise PruneError(f"feature store {path}: {name} has NaN or inf for {int(nonfinite.sum())} examples "
                         f"({_listed(rows, nonfinite)}; did warm-up diverge?); re-create it with a lower --lr")
    large = (flat.abs() > MAX_FEATURE).any(1)
    if large.any():
        raise PruneError(f"feature store {path}: {name} reaches {float(flat[large].abs().max()):.3g} for "
                         f"{int(large.sum())} examples, beyond {MAX_FEATURE:g}, where distances overflow "
                         f"({_listed(rows, large)}; did warm-up diverge?); re-create it with a lower --lr")
    return values


def _listed(rows: np.ndarray, bad: torch.Tensor) -> str:
    named = rows[bad.numpy()]
    return "rows " + ", ".join(map(str, named[:5])) + (", ..." if len(named) > 5 else "")


def chunk_rows(n: int) -> Iterator[torch.Tensor]:
    """The row indices of each ``CHUNK_ROWS`` block of 0..n-1, in order: a pass that reads every
    chunk of a store once and holds one block in memory."""
    for start in range(0, n, CHUNK_ROWS):
        yield torch.arange(start, min(start + CHUNK_ROWS, n))


def _read_rows(values: torch.Tensor | StoredRows, rows: torch.Tensor | None) -> torch.Tensor:
    """``values[rows]`` (read from the file for a stored dataset), or every row without ``rows``."""
    return values[:] if rows is None else values[rows]


def with_sample_axis(values: torch.Tensor | StoredRows) -> torch.Tensor | StoredRows:
    """(n, w) -> (n, 1, w), read lazily for a stored dataset."""
    return values.with_sample_axis() if isinstance(values, StoredRows) else values[:, None]


def _decoded(path: Path, attrs: dict) -> dict:
    """The attributes' values, each stored as JSON text."""
    meta = {}
    for key, text in attrs.items():
        try:
            meta[key] = json.loads(text)
        except (ValueError, TypeError, RecursionError) as err:
            problem = "is nested too deeply to read" if isinstance(err, RecursionError) else "is not valid JSON"
            raise PruneError(f"feature store {path}: attribute {key!r} {problem}; it was not written by "
                             "`prune features` or is damaged: re-create it") from None
    return meta


def _check_contents(path: Path, meta: dict, arrays: dict) -> None:
    """Attributes valid, shapes consistent, features floating point, labels in 0..C-1 and matching the
    fingerprint (without label noise), flipped indices in range; else ``PruneError`` naming the array."""
    labels = arrays["labels"]
    if labels.ndim != 1 or not _integral(labels):
        raise PruneError(f"feature store {path}: labels are {labels.dtype} of shape {tuple(labels.shape)}, expected "
                         "one integer per example; the file is damaged: re-create it")
    store_schema.validate(meta, source=str(path))
    _check_shapes(path, len(labels), meta["num_classes"], arrays)
    n, classes = len(labels), meta["num_classes"]
    recorded = meta["dataset"]["num_examples"]
    if recorded != n:
        raise PruneError(f"feature store {path} holds {n} examples, but its dataset attribute records {recorded}; "
                         "the file is damaged: re-create it")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise PruneError(f"feature store {path}: labels run from {int(labels.min())} to {int(labels.max())}, "
                         f"outside 0..{classes - 1}; the file is damaged: re-create it")
    flipped = arrays["noise_flipped"]
    if flipped.ndim != 1 or not _integral(flipped) or (len(flipped) and (int(flipped.min()) < 0 or int(flipped.max()) >= n)):
        raise PruneError(f"feature store {path}: noise_flipped must list indices in 0..{n - 1}; the file is damaged: "
                         "re-create it")
    clean = not meta.get("label_noise") and not len(flipped)  # then the labels are the data's, which it fingerprints
    if clean and meta["fingerprint"].startswith("sha256:") and label_fingerprint(labels) != meta["fingerprint"]:
        raise PruneError(f"feature store {path}: its labels do not match its fingerprint (the store records no label "
                         "noise, so they are the data's labels); the file is damaged: re-create it")
    arrays["labels"], arrays["noise_flipped"] = labels.long(), flipped.long()


def _check_shapes(path: Path, n: int, classes: int, arrays: dict) -> None:
    """Each feature array there, of the shape ``n`` examples and ``classes`` classes give, and floating point."""
    def damaged(name: str, expected) -> PruneError:
        found = tuple(arrays[name].shape) if name in arrays else "none"
        return PruneError(f"feature store {path}: {name} has shape {found}, expected {expected} for {n} examples of "
                          f"{classes} classes; the file is damaged: re-create it")

    for name, expected in (("grad_logit", "(n, M, C)"), ("embedding", "(n, M, e)")):
        if arrays[name].ndim != 3:
            raise damaged(name, expected)
    samples, width = arrays["grad_logit"].shape[1], arrays["embedding"].shape[-1]
    shapes = {"grad_logit": (n, samples, classes), "hess_logit": (n, samples, classes),
              "embedding": (n, samples, width), "grad_logit_ema": (n, classes), "hess_logit_ema": (n, classes),
              "grad_logit_point": (n, classes), "hess_logit_point": (n, classes), "embedding_point": (n, width)}
    if samples == 1:  # the one sample is the unperturbed weights': no separate point features
        shapes = {name: shape for name, shape in shapes.items() if name not in POINT}
    for name, shape in shapes.items():
        if name not in arrays or tuple(arrays[name].shape) != shape:
            raise damaged(name, shape)
    if arrays["loss_per_epoch"].ndim != 2 or arrays["loss_per_epoch"].shape[0] != n:
        raise damaged("loss_per_epoch", f"({n}, T)")
    for name in PER_EPOCH:  # every record has the loss's T columns
        if tuple(arrays[name].shape) != tuple(arrays["loss_per_epoch"].shape):
            raise damaged(name, tuple(arrays["loss_per_epoch"].shape))
    for name, values in arrays.items():
        kind, expected = ("u", "unsigned integers") if PER_EPOCH.get(name) == "uint8" else ("f", "floating point numbers")
        if isinstance(values, StoredRows) and values.dataset.dtype.kind != kind:
            raise PruneError(f"feature store {path}: {name} holds {values.dataset.dtype} values, expected {expected}; "
                             "the file is damaged or was not written by `prune features`: re-create it")


def _integral(values: torch.Tensor) -> bool:
    return not values.is_floating_point() and not values.is_complex() and values.dtype != torch.bool
