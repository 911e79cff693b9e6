"""Hugging Face ``datasets`` as a source (``hf:PATH``): opened, checked and read in batches.

Source ``hf:PATH`` (``prune.data.load_dataset("hf:PATH", split=..., image_column=...,
label_column=..., feature_column=...)``)
    A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``. Of a
    ``DatasetDict`` the training side is ``split`` (default ``train``) and the held-out (test)
    side is ``eval_split``; by default the ``test`` split, else the ``validation`` split (one
    that is not the training split). Without either the test split is *empty*: prune holds
    nothing out of the training split (the manifest's indices cover all of it), and ``prune
    train`` then reports no test accuracy. ``LoadedData.eval_split`` names the split held out.
    A single ``Dataset`` is all training side (recorded as split ``train``; ``split`` may be
    ``None`` or ``"train"``); it has no held-out split.

    Columns: ``label_column`` (default ``label``) holds integer labels ``0..C-1``; a
    ``ClassLabel`` feature gives C, otherwise C is the largest label plus one and every
    class below it must occur. The inputs come from *either* ``image_column`` (default
    ``image``: PIL images, or arrays ``H x W``, ``H x W x C`` or ``C x H x W``, all one
    size) *or* ``feature_column`` (one precomputed vector per example, all one length --
    embeddings of text or of a large model; the data are then vectors and the default
    model is ``mlp``, a head over them). Both are normalised like the other sources
    (``prune.data.loaded``). Everything is read in batches of ``BATCH`` rows through the numpy
    format; the dataset is never materialised as Python objects. Images are *streamed*: one
    pass checks their shapes and sums the training side's per-channel statistics (in float64),
    and the splits' inputs are ``prune.data.streaming.LazyImages`` that decode rows of the
    memory-mapped Arrow files a batch at a time (``HFImageDecoder``), so memory does not grow
    with the number of images; vectors are read into memory.

Writing the selected rows back out (``Manifest.apply``, ``prune filter``) is ``prune.data.hf_filter``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from prune.data.labels import unused_labels
from prune.data.loaded import LoadedData, Split, channels_first, from_arrays
from prune.data.streaming import LazyImages, Normalised, channel_stats
from prune.errors import PruneError

PREFIX = "hf:"
BATCH = 1000
DEFAULT_SPLIT = "train"
DEFAULT_LABEL = "label"
DEFAULT_IMAGE = "image"
EVAL_SPLITS = ("test", "validation")  # held out by default, the first present


# ----------------------------------------------------------------------------- opening


def dataset_path(spec: str) -> Path:
    """The absolute folder of ``hf:PATH`` (``PATH`` alone is accepted too)."""
    text = spec[len(PREFIX):] if spec[: len(PREFIX)].lower() == PREFIX else spec
    if not text.strip():
        raise PruneError("hf: needs a folder written by save_to_disk, e.g. hf:data/my_set")
    return Path(text.strip()).expanduser().resolve()


def open_saved(spec: str):
    """``datasets.load_from_disk`` of ``hf:PATH`` -> (Dataset or DatasetDict, absolute path)."""
    import datasets

    path = dataset_path(spec)
    if not path.exists():
        raise PruneError(
            f"no such folder: {path}; hf: takes a folder written by save_to_disk (for a Hub "
            f"dataset, run datasets.load_dataset(NAME).save_to_disk({str(path)!r}) first)"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except IndexError:  # datasets cannot read back a split saved with no rows
        raise PruneError(
            f"cannot load {path} with datasets.load_from_disk: one of its splits has no rows; drop the empty "
            "split (or add rows to it) and save it again"
        ) from None
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PruneError(
            f"cannot load {path} with datasets.load_from_disk ({reason}); "
            f"hf: takes a folder written by Dataset.save_to_disk or DatasetDict.save_to_disk"
        ) from None
    return loaded, path


def pick_split(loaded, split: str | None, where: str):
    """(Dataset, split name or None for a single Dataset) from what ``load_from_disk`` gave."""
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        name = DEFAULT_SPLIT if split is None else split
        if name not in loaded:
            hint = "pass --split NAME" if split is None else "check --split"
            raise PruneError(
                f"{where} has no split {name!r} (its splits: {', '.join(loaded) or 'none'}); {hint}"
            )
        return loaded[name], name
    if isinstance(loaded, datasets.Dataset):
        # all of a single Dataset is the training side, recorded as split "train"
        if split not in (None, DEFAULT_SPLIT):
            raise PruneError(
                f"{where} is a single Dataset, not a DatasetDict, so it has no split {split!r}; drop --split"
            )
        return loaded, None
    raise PruneError(f"{where} is a {type(loaded).__name__}, expected a datasets.Dataset or DatasetDict")


def pick_eval_split(loaded, eval_split: str | None, train_split: str | None, where: str) -> str | None:
    """The split held out for evaluation: ``eval_split``, else the first of ``EVAL_SPLITS`` present
    that is not the training split; None when there is none."""
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        if eval_split is not None:
            raise PruneError(f"{where} is a single Dataset, not a DatasetDict, so it has no split {eval_split!r} "
                             "to evaluate on; drop --eval-split")
        return None
    if eval_split is None:
        return next((name for name in EVAL_SPLITS if name in loaded and name != train_split), None)
    if eval_split not in loaded:
        raise PruneError(f"{where} has no split {eval_split!r} (its splits: {', '.join(loaded)}); check --eval-split")
    if eval_split == train_split:
        raise PruneError(f"--eval-split {eval_split} is the split selected from; hold out another one "
                         f"(its splits: {', '.join(loaded)})")
    return eval_split


def require_columns(ds, columns: dict, where: str) -> None:
    """Raise ``PruneError`` naming the first column that ``ds`` lacks; ``columns``: name -> option."""
    for name, option in columns.items():
        if name not in ds.column_names:
            raise PruneError(
                f"{where} has no column {name!r} (its columns: {', '.join(ds.column_names) or 'none'}); "
                f"name the right one with --{option}"
            )


# ----------------------------------------------------------------------------- reading


def _batches(ds, column: str):
    """The column's values, BATCH rows at a time, as numpy arrays (object arrays if ragged)."""
    view = ds.select_columns([column]).with_format("numpy")
    for batch in view.iter(batch_size=BATCH):
        yield batch[column]


def _label_kind(ds, column: str, where: str):
    """(ClassLabel num_classes or None) after checking the column holds integers."""
    import datasets

    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return feature.num_classes
    dtype = getattr(feature, "dtype", None)
    if isinstance(feature, datasets.Value) and dtype and dtype.startswith(("int", "uint")):
        return None
    raise PruneError(
        f"label column {column!r} of {where} has type {feature}; labels must be integers 0..C-1 "
        f"(for strings use ds.class_encode_column({column!r}); for other types cast it to int64)"
    )


def read_labels(ds, column: str, where: str) -> np.ndarray:
    """The label column as int64, in the dataset's order (indices mapping included)."""
    require_columns(ds, {column: "label-column"}, where)
    _label_kind(ds, column, where)
    out = np.empty(len(ds), dtype=np.int64)
    start = 0
    for values in _batches(ds, column):
        if values.dtype.kind not in "iu":  # None (object) or NaN (float): a missing label
            raise PruneError(
                f"label column {column!r} of {where} has missing values near row {start}; "
                "drop the unlabelled rows first"
            )
        out[start:start + len(values)] = values
        start += len(values)
    return out


def _as_array(values: np.ndarray, column: str, start: int, where: str) -> np.ndarray:
    """One batch as a regular numeric array (ragged or PIL batches come as object arrays)."""
    if values.dtype == object:
        items = []
        for offset, item in enumerate(values):
            if item is None:
                raise PruneError(f"column {column!r} of {where} has no value in row {start + offset}; drop or fill it")
            items.append(np.asarray(item))
        shapes = {item.shape for item in items}
        if len(shapes) > 1:
            a, b = sorted(shapes)[:2]
            raise PruneError(
                f"column {column!r} of {where} holds examples of different shapes ({a} and {b}, "
                f"rows {start}..{start + len(values) - 1}); every example needs one shape: resize "
                f"images (and give them one mode, e.g. ds.cast_column({column!r}, datasets.Image(mode='RGB'))) "
                "or pad vectors first"
            )
        values = np.stack(items) if items else values
    if values.dtype.kind not in "uifb":
        raise PruneError(
            f"column {column!r} of {where} holds {values.dtype} values; it must be numeric (images or vectors)"
        )
    return values


class HFImageDecoder(Normalised):
    """Rows of an hf: image column as normalised N x C x H x W batches (``prune.data.streaming``)."""

    def __init__(self, ds, column: str, where: str, mean, std):
        super().__init__(mean, std)
        self.view, self.column, self.where = ds.select_columns([column]).with_format("numpy"), column, where

    def __len__(self) -> int:
        return len(self.view)

    def raw(self, positions):
        return _images(_as_array(self.view[positions][self.column], self.column, positions[0], self.where),
                       self.column, self.where)


def checked_images(ds, column: str, where: str):
    """The image column as N x C x H x W chunks of ``BATCH`` rows, all of one shape (else ``PruneError``)."""
    shape, start = None, 0
    for values in _batches(ds, column):
        images = _images(_as_array(values, column, start, where), column, where)
        if shape is not None and images.shape[1:] != shape:
            raise PruneError(
                f"column {column!r} of {where} holds examples of different shapes "
                f"({shape} and {images.shape[1:]}); every example needs one shape"
            )
        shape, start = images.shape[1:], start + len(images)
        yield images


def read_inputs(ds, column: str, where: str, example_shape: tuple | None = None) -> np.ndarray:
    """The input column as one ``N x ...`` numeric array, read BATCH rows at a time."""
    out = None
    start = 0
    for values in _batches(ds, column):
        values = _as_array(values, column, start, where)
        if out is None:
            out = np.empty((len(ds), *values.shape[1:]), dtype=values.dtype)
        if values.shape[1:] != out.shape[1:]:
            raise PruneError(
                f"column {column!r} of {where} holds examples of different shapes "
                f"({out.shape[1:]} and {values.shape[1:]}); every example needs one shape"
            )
        if values.dtype != out.dtype and not np.can_cast(values.dtype, out.dtype, "safe"):
            out = out.astype(np.result_type(out.dtype, values.dtype))
        out[start:start + len(values)] = values
        start += len(values)
    if out is None:  # an empty split
        out = np.empty((0, *(example_shape or ())), dtype=np.float32)
    return out


def _images(x: np.ndarray, column: str, where: str) -> np.ndarray:
    """N x H x W [x C] or N x C x H x W -> N x C x H x W."""
    images = channels_first(x)
    if images is not None:
        return images
    if x.ndim == 2:
        raise PruneError(
            f"image column {column!r} of {where} holds vectors (one {x.shape[1]}-vector per example); "
            f"pass it as --feature-column {column}"
        )
    raise PruneError(
        f"image column {column!r} of {where} holds examples of shape {x.shape[1:]}; images must be "
        "H x W, H x W x C or C x H x W with C in 1, 3 or 4"
    )


def _vectors(x: np.ndarray, column: str, where: str) -> np.ndarray:
    if x.ndim != 2:
        raise PruneError(
            f"feature column {column!r} of {where} holds examples of shape {x.shape[1:]}; it needs one "
            "vector per example (pool token embeddings into one vector first)"
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise PruneError(f"feature column {column!r} of {where} contains NaN or infinite values; clean them first")
    return x


# ----------------------------------------------------------------------------- loading


def load(spec: str, *, split: str | None = None, image_column: str | None = None,
         label_column: str | None = None, feature_column: str | None = None, eval_split: str | None = None):
    """``hf:PATH`` as a ``LoadedData`` (see the module docstring)."""
    if image_column is not None and feature_column is not None:
        raise PruneError("give either --image-column or --feature-column, not both")
    loaded, path = open_saved(spec)
    source = f"{PREFIX}{path}"
    train, split_name = pick_split(loaded, split, source)
    held_out = pick_eval_split(loaded, eval_split, split_name, source)
    test = None if held_out is None else loaded[held_out]
    label = label_column or DEFAULT_LABEL
    if feature_column is not None:
        kind, column = "feature", feature_column
    else:
        kind, column = "image", image_column or DEFAULT_IMAGE
    where = f"{source} (split {split_name})" if split_name else source
    if column not in train.column_names and image_column is None and feature_column is None:
        raise PruneError(
            f"{where} has no column {DEFAULT_IMAGE!r} (its columns: {', '.join(train.column_names)}); "
            "pass --image-column NAME for images or --feature-column NAME for precomputed vectors"
        )
    require_columns(train, {label: "label-column", column: f"{kind}-column"}, where)
    if len(train) == 0:
        raise PruneError(f"{where} has no rows; the training split needs examples")
    num_classes = _label_kind(train, label, where)

    y_train = read_labels(train, label, where)
    test_where = f"{source} (split {held_out})"
    if test is not None:
        require_columns(test, {label: "label-column", column: f"{kind}-column"}, test_where)
        _label_kind(test, label, test_where)
        y_test = read_labels(test, label, test_where)
    else:
        y_test = np.empty(0, dtype=np.int64)
    num_classes = _num_classes(y_train, y_test, num_classes, label, source, split_name, held_out)
    if kind == "feature":
        x_train = _vectors(read_inputs(train, column, where), column, where)
        x_test = (np.empty((0, *x_train.shape[1:]), dtype=np.float32) if test is None
                  else _vectors(read_inputs(test, column, test_where, x_train.shape[1:]), column, test_where))
        _same_shape(x_train.shape[1:], x_test.shape[1:], source, split_name, held_out)
        data = from_arrays(source, x_train, y_train, x_test, y_test, num_classes)
    else:
        data = _streamed_images(source, train, test, column, (where, test_where), (y_train, y_test), num_classes)
        _same_shape(data.train.x.shape[1:], data.test.x.shape[1:], source, split_name, held_out)
    return replace(data, split=split_name or DEFAULT_SPLIT, columns={"label": label, kind: column}, eval_split=held_out)


def _streamed_images(source, train, test, column, wheres, labels, num_classes) -> LoadedData:
    """Both splits as ``LazyImages`` over the Arrow files, normalised with the training side's
    per-channel statistics; one pass over each split checks shapes and types before any run starts."""
    mean, std = channel_stats(checked_images(train, column, wheres[0]))
    decoder = HFImageDecoder(train, column, wheres[0], mean, std)
    shape = decoder.raw([0]).shape[1:]
    x_train = LazyImages(decoder, shape)
    x_test = LazyImages(decoder, shape, np.empty(0, dtype=np.int64))  # nothing held out: no rows
    if test is not None:
        for _ in checked_images(test, column, wheres[1]):
            pass
        decoder = HFImageDecoder(test, column, wheres[1], mean, std)
        x_test = LazyImages(decoder, decoder.raw([0]).shape[1:] if len(test) else shape)
    y_train, y_test = (torch.from_numpy(y) for y in labels)
    return LoadedData(source=source, train=Split(x_train, y_train), test=Split(x_test, y_test),
                      num_classes=num_classes, mean=mean, std=std)


def _same_shape(train_shape, test_shape, source, split_name, held_out) -> None:
    if tuple(train_shape) != tuple(test_shape):
        raise PruneError(
            f"the {split_name} and {held_out} splits of {source} have different example shapes "
            f"({tuple(train_shape)} vs {tuple(test_shape)}); both need the same shape"
        )


def _num_classes(y_train, y_test, num_classes, label, source, split_name, held_out) -> int:
    """C: the ClassLabel's, else the largest label plus one; every label checked against it."""
    labels = np.concatenate([y_train, y_test])
    if labels.min() < 0:
        bad = (split_name or DEFAULT_SPLIT) if y_train.min() < 0 else held_out
        raise PruneError(
            f"the {bad} split of {source} has label {int(labels.min())} (unlabelled rows?); labels must be "
            f"0..C-1: drop those rows first, e.g. ds.filter(lambda row: row[{label!r}] >= 0)"
        )
    if num_classes is None:
        num_classes = int(labels.max()) + 1
        present = np.unique(labels)
        if len(present) != num_classes:
            shown = unused_labels(present, num_classes)
            raise PruneError(
                f"labels in {source} run up to {num_classes - 1} but never use {shown}; labels must be "
                f"0..C-1 with every class used (or make {label!r} a ClassLabel column)"
            )
    elif labels.max() >= num_classes:
        raise PruneError(
            f"label column {label!r} of {source} is a ClassLabel of {num_classes} classes but holds "
            f"label {int(labels.max())}; fix the labels or the feature"
        )
    if num_classes < 2:
        raise PruneError(f"{source} has only one class; labels must span at least 0..1")
    return num_classes
