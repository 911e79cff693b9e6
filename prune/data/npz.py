"""NumPy ``.npz`` files (``npz:PATH``) with arrays ``x_train, y_train, x_test, y_test``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from prune.atomic import input_kind
from prune.data.labels import unused_labels
from prune.data.loaded import LoadedData, channels_first, from_arrays
from prune.errors import PruneError

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Bring x to N x D (vectors) or N x C x H x W (images)."""
    if x.ndim == 2:
        return x
    images = channels_first(x)
    if images is not None:
        return images
    if x.ndim == 4:
        raise PruneError(
            f"{key} in {path} has shape {x.shape}; 4-D images must be N x H x W x C "
            f"(or N x C x H x W) with C in 1, 3 or 4"
        )
    raise PruneError(
        f"{key} in {path} has shape {x.shape}; expected N x D vectors or N x H x W [x C] images"
    )


def load_npz(path_text: str) -> LoadedData:
    """The npz file at ``path_text`` as a ``LoadedData``; a problem with it is one ``PruneError``."""
    if not path_text.strip():
        raise PruneError("npz: needs a file path, e.g. npz:data/my_set.npz")
    path = Path(path_text.strip()).expanduser().resolve()
    if input_kind(path, "npz file") != "file":
        raise PruneError(f"no such npz file: {path}; check the path after 'npz:'")
    arrays = _read_arrays(path)
    for split in ("train", "test"):
        _check_split(arrays[f"x_{split}"], arrays[f"y_{split}"], split, path)
    x_train = _npz_images(arrays["x_train"], "x_train", path)
    x_test = _npz_images(arrays["x_test"], "x_test", path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise PruneError(
            f"x_train and x_test in {path} have different example shapes "
            f"({x_train.shape[1:]} vs {x_test.shape[1:]}); both splits need the same shape"
        )
    y_train, y_test = arrays["y_train"].astype(np.int64), arrays["y_test"].astype(np.int64)
    return from_arrays(f"npz:{path}", x_train, y_train, x_test, y_test, _num_classes(y_train, y_test, path))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of the archive at ``path``, read whole (no pickle)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PruneError(
            f"cannot read {path} as a NumPy .npz file ({exc}); save it with numpy.savez"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise PruneError(
            f"{path} holds a single array, not an .npz archive; "
            f"save {', '.join(_NPZ_KEYS)} with numpy.savez"
        )
    with archive:
        missing = [k for k in _NPZ_KEYS if k not in archive.files]
        if missing:
            raise PruneError(
                f"{path} lacks array(s) {', '.join(missing)} "
                f"(it has: {', '.join(archive.files) or 'none'}); "
                f"it needs {', '.join(_NPZ_KEYS)}"
            )
        try:
            return {k: archive[k] for k in _NPZ_KEYS}
        except ValueError as exc:  # object arrays need pickle
            raise PruneError(
                f"cannot read arrays in {path} ({exc}); store plain numeric arrays"
            ) from None


def _check_split(x: np.ndarray, y: np.ndarray, split: str, path: Path) -> None:
    """One split: numeric, finite examples with at least one value each, one integer label >= 0 per example."""
    if x.dtype.kind not in "uif":
        raise PruneError(
            f"x_{split} in {path} has dtype {x.dtype}; it must be numeric (uint8 or float)"
        )
    if y.ndim != 1:
        raise PruneError(
            f"y_{split} in {path} has shape {y.shape}; labels must be a 1-D array of length N"
        )
    if y.dtype.kind not in "ui":
        raise PruneError(
            f"y_{split} in {path} has dtype {y.dtype}; labels must be integers 0..C-1 "
            f"(save them with .astype(numpy.int64))"
        )
    if x.ndim == 0 or len(x) != len(y):
        raise PruneError(
            f"x_{split} and y_{split} in {path} differ in length "
            f"({x.shape[0] if x.ndim else 'scalar'} vs {len(y)}); give one label per example"
        )
    if len(y) == 0:
        raise PruneError(f"x_{split} in {path} is empty; both splits need examples")
    if 0 in x.shape[1:]:
        raise PruneError(
            f"x_{split} in {path} has shape {x.shape}: 0 features per example; each example needs at least "
            "one value (N x D vectors or N x H x W [x C] images)"
        )
    if int(y.min()) < 0:
        raise PruneError(
            f"y_{split} in {path} has negative label {int(y.min())}; labels must be 0..C-1"
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise PruneError(
            f"x_{split} in {path} contains NaN or infinite values; clean them first"
        )


def _num_classes(y_train: np.ndarray, y_test: np.ndarray, path: Path) -> int:
    """C: the largest label plus one, when every class 0..C-1 is used (C >= 2)."""
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    if num_classes < 2:
        raise PruneError(
            f"{path} has only one class (all labels 0); labels must span at least 0..1"
        )
    present = np.union1d(np.unique(y_train), np.unique(y_test))
    if len(present) != num_classes:
        shown = unused_labels(present, num_classes)
        raise PruneError(
            f"labels in {path} run up to {num_classes - 1} but never use {shown}; labels must be "
            f"0..C-1 with every class used (remap them with numpy.unique(y, return_inverse=True))"
        )
    return num_classes
