"""Hugging Face ``datasets`` as a target: a manifest's rows checked, selected and written.

``apply_manifest`` (``Manifest.apply``) checks a dataset against a manifest (size,
then the label fingerprint; with the class counts a manifest records, a mismatch is told
apart as *order* -- same labels, shuffled or sorted -- or *labels*) and returns
``dataset.select(indices).flatten_indices()``. ``write_filtered`` (``prune filter``) writes
the selected rows with ``save_to_disk``, atomically.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from prune.atomic import atomic_path, ensure_writable
from prune.data.hf import DEFAULT_LABEL, DEFAULT_SPLIT, PREFIX, open_saved, pick_split, read_labels
from prune.data.labels import label_fingerprint
from prune.data.sources import SourceOptions
from prune.errors import PruneError

WEIGHT_COLUMN = "prune_weight"
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes in a DatasetDict / Dataset folder


def _label_column(manifest, label_column: str | None) -> str:
    if label_column:
        return label_column
    return (manifest.dataset.get("columns") or {}).get("label", DEFAULT_LABEL)


def checked_subset(manifest, dataset, *, label_column: str | None = None, force: bool = False,
                   where: str = "the dataset", can_force: bool = True):
    """Check ``dataset`` against ``manifest``; return (``dataset.select(indices)``, warning)."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        dataset, _ = pick_split(dataset, manifest.dataset.get("split", DEFAULT_SPLIT), where)
    if not isinstance(dataset, datasets.Dataset):
        raise PruneError(
            f"Manifest.apply takes a datasets.Dataset (or DatasetDict), got {type(dataset).__name__}; "
            "for arrays or tensors index them with manifest.indices"
        )
    column = _label_column(manifest, label_column)
    if len(dataset) != manifest.dataset["num_examples"]:
        warning = manifest.check_dataset(fingerprint="", num_examples=len(dataset), force=force, can_force=can_force)
    else:
        labels = read_labels(dataset, column, where)
        counts = np.bincount(labels[labels >= 0], minlength=manifest.dataset["num_classes"]).tolist()
        warning = manifest.check_dataset(fingerprint=label_fingerprint(labels), num_examples=len(labels),
                                         force=force, class_counts=counts, can_force=can_force)
    return dataset.select(manifest.indices), warning


def check_saved(manifest, spec: str, *, split: str | None = None, label_column: str | None = None) -> str:
    """Check ``hf:PATH`` against ``manifest`` reading its labels only; return what was checked."""
    import datasets

    loaded, path = open_saved(spec)
    if isinstance(loaded, datasets.DatasetDict) and split is None:
        split = manifest.dataset.get("split", DEFAULT_SPLIT)
    ds, split_name = pick_split(loaded, split, f"{PREFIX}{path}")
    where = f"{PREFIX}{path}" + (f" (split {split_name})" if split_name else "")
    checked_subset(manifest, ds, label_column=label_column, where=where, can_force=False)
    return where


def apply_manifest(manifest, dataset, *, label_column: str | None = None, force: bool = False,
                   keep_in_memory: bool = False):
    """``Manifest.apply``: check, then select once and flatten once."""
    subset, warning = checked_subset(manifest, dataset, label_column=label_column, force=force)
    if warning:
        warnings.warn(warning, UserWarning, stacklevel=3)
    return subset.flatten_indices(keep_in_memory=keep_in_memory)


@contextmanager
def quiet_datasets(on: bool = True) -> Iterator[None]:
    """Within this block (``on``: ``--quiet``) the ``datasets`` library draws no progress bars;
    afterwards they are as before. Off, it changes nothing (the user's own setting holds)."""
    import datasets

    before = datasets.is_progress_bar_enabled()
    if on:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if on and before:
            datasets.enable_progress_bars()


def write_filtered(manifest, spec: str, out: str | os.PathLike, *, options: SourceOptions = SourceOptions(),
                   weight_column: bool = False, force: bool = False, overwrite: bool = False,
                   inputs=()) -> tuple[Path, int, str | None]:
    """``prune filter``: write the manifest's rows of ``hf:PATH`` to ``out`` with save_to_disk.

    ``options`` gives the ``split`` to filter and the ``label_column`` checked against the
    manifest (defaults: the manifest's); the other source options do not apply. A
    ``DatasetDict`` is written as a ``DatasetDict`` whose split is filtered and whose other
    splits are copied unchanged. The result appears at ``out`` only when complete (temporary
    folder beside it, then renamed); ``out`` must not overlap the dataset or ``inputs`` (other
    files read, such as the manifest's), nor be a file or a folder other than a saved dataset.
    Returns (out, rows written, warning or None).
    """
    import datasets

    if options != SourceOptions(split=options.split, label_column=options.label_column):
        raise PruneError("prune filter takes a split and a label column of the source, no other source options")
    split, label_column = options.split, options.label_column
    loaded, path = open_saved(spec)
    where = f"{PREFIX}{path}"
    out = Path(out).expanduser()
    target = out.resolve()
    ensure_writable(out, inputs=[path, *inputs], folder=True, overwrite=overwrite)
    if out.exists() and not out.is_dir():
        raise PruneError(f"{out} is a file, not a folder save_to_disk wrote; prune replaces only what it wrote: "
                         "choose another --out")
    if out.is_dir() and not any((out / name).is_file() for name in SAVED_MARKERS):
        raise PruneError(f"{out} is a folder that holds no saved dataset; prune replaces only what it wrote: "
                         "choose another --out")
    is_dict = isinstance(loaded, datasets.DatasetDict)
    if is_dict and split is None:
        split = manifest.dataset.get("split", DEFAULT_SPLIT)
    ds, split_name = pick_split(loaded, split, where)
    if split_name:
        where = f"{where} (split {split_name})"
    subset, warning = checked_subset(manifest, ds, label_column=label_column, force=force, where=where)

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.work-") as work:
        if weight_column:
            if WEIGHT_COLUMN in subset.column_names:
                raise PruneError(f"{where} already has a column {WEIGHT_COLUMN!r}; drop it first or leave out --weight-column")
            # add_column needs contiguous rows: flatten into the work folder, not the source's
            subset = subset.flatten_indices(cache_file_name=str(Path(work) / "flat.arrow"))
            subset = subset.add_column(WEIGHT_COLUMN, manifest.weights.astype(np.float64),
                                       feature=datasets.Value("float64"))
        result = datasets.DatasetDict({**loaded, split_name: subset}) if is_dict else subset
        try:
            with atomic_path(target, overwrite=overwrite) as tmp:  # the old --out is replaced only once this is complete
                result.save_to_disk(str(tmp))
        except OSError as err:  # a full disk, say
            raise PruneError(f"cannot write {out} ({err.strerror or err}); nothing was written there") from None
    return out, len(subset), warning
