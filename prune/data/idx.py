"""MNIST and Fashion-MNIST from their original IDX files (``fashion-mnist``, ``mnist``).

The four files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; gzipped or not) are read from
``data_root``, or from torchvision's layout ``data_root/FashionMNIST/raw`` /
``data_root/MNIST/raw``, headers checked. ``download=True`` fetches them with torchvision.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from prune.data.loaded import LoadedData, from_arrays
from prune.data.torchvision_sets import root_folder, torchvision_download
from prune.errors import PruneError

# canonical name -> (display name, torchvision sub-folder)
IDX_SETS = {"fashion-mnist": ("Fashion-MNIST", "FashionMNIST"), "mnist": ("MNIST", "MNIST")}
# the first 20 training labels of the real files, to tell the two sets apart
_IDX_TRAIN_HEADS = {
    "fashion-mnist": [9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9, 1, 0, 6, 4],
    "mnist": [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5, 3, 6, 1, 7, 2, 8, 6, 9],
}
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def find_idx_files(
    root: Path, subfolder: str
) -> tuple[dict[str, Path] | None, Path | None, list[str]]:
    """Look in root, root/<Sub>/raw and root/raw. Return (files, partial_dir, missing)."""
    best_dir, best_missing = None, None
    for folder in (root, root / subfolder / "raw", root / "raw"):
        if not folder.is_dir():
            continue
        found, missing = {}, []
        for stem in _IDX_FILES:
            # prefer the un-gzipped file (torchvision leaves both; it is faster to read)
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[stem] = candidate
                    break
            else:
                missing.append(f"{stem}.gz")
        if not missing:
            return found, None, []
        if found and best_dir is None:
            best_dir, best_missing = folder, missing
    return None, best_dir, best_missing or []


def _read_idx(path: Path, images: bool) -> np.ndarray:
    """One IDX file, header checked: images -> N x 28 x 28 uint8, labels -> N uint8.

    A gzipped file is inflated as a stream, and never past the size its header declares:
    a file that holds more (a "zip bomb") is refused after reading that much plus one byte.
    """
    magic, header = (2051, 16) if images else (2049, 8)
    bad = f"{path} is not a valid IDX {'image' if images else 'label'} file"
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with (gzip.open if gzipped else open)(path, "rb") as file:
            head = file.read(header)
            if len(head) < header:
                raise PruneError(f"{bad} (only {len(head)} bytes); replace it or pass --download")
            fields = np.frombuffer(head, dtype=">u4")
            if int(fields[0]) != magic:
                raise PruneError(f"{bad} (magic number {int(fields[0])}, expected {magic}); replace it")
            n = int(fields[1])
            if images and (int(fields[2]), int(fields[3])) != (28, 28):
                raise PruneError(f"{bad} (images are {int(fields[2])} x {int(fields[3])}, expected 28 x 28); replace it")
            size = n * (784 if images else 1)
            data = file.read(size + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise PruneError(f"cannot read {path}: {exc}; delete it and pass --download, or replace it") from None
    if len(data) != size:
        held = f"{len(data)} data bytes" if len(data) <= size else "more data bytes"
        raise PruneError(
            f"{bad} (header says {n} items but it holds {held}, expected {size}); "
            "the file is truncated or corrupt, replace it"
        )
    arr = np.frombuffer(data, dtype=np.uint8)
    return arr.reshape(n, 28, 28) if images else arr


def load_idx(name: str, data_root, download: bool) -> LoadedData:
    """``fashion-mnist`` or ``mnist`` from the IDX files in ``data_root`` (downloaded if asked and absent)."""
    display, sub = IDX_SETS[name]
    root = root_folder(data_root, display, f"the folder holding {_IDX_FILES[0]}.gz etc.")
    files, partial, missing = find_idx_files(root, sub)
    if files is None and download:
        torchvision_download(sub, root, display, train=True)
        files, partial, missing = find_idx_files(root, sub)
    if files is None:
        if partial is not None:
            raise PruneError(
                f"incomplete {display} files in {partial}: missing {', '.join(missing)}; "
                f"add them, or pass --download"
            )
        where = root if root.is_dir() else f"{root} (no such folder)"
        raise PruneError(
            f"no {display} files in {where} (expected {', '.join(s + '.gz' for s in _IDX_FILES)}); "
            f"pass --data-root DIR or --download"
        )
    x_train = _read_idx(files[_IDX_FILES[0]], images=True)
    y_train = _read_idx(files[_IDX_FILES[1]], images=False)
    x_test = _read_idx(files[_IDX_FILES[2]], images=True)
    y_test = _read_idx(files[_IDX_FILES[3]], images=False)
    for xs, ys, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if len(xs) != len(ys):
            raise PruneError(
                f"{display} {split} files disagree: {len(xs)} images but {len(ys)} labels; "
                "replace them"
            )
        if len(ys) and int(ys.max()) >= 10:
            raise PruneError(
                f"{display} {split} labels go up to {int(ys.max())}, expected 0..9; "
                "replace the file"
            )
    # The two sets share file names; catch the real files of one loaded as the other.
    if len(y_train) == 60000:
        head = y_train[:20].tolist()
        other = next((n for n, h in _IDX_TRAIN_HEADS.items() if n != name and h == head), None)
        if other is not None:
            raise PruneError(
                f"the files in {files[_IDX_FILES[1]].parent} are {IDX_SETS[other][0]}, "
                f"not {display}; "
                f"load them as {other!r}, or point --data-root at the {display} files"
            )
    return from_arrays(name, x_train[:, None], y_train, x_test[:, None], y_test, 10)
