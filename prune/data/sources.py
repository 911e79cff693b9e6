"""Training data in memory: every source becomes one ``LoadedData`` of float32 tensors.

Sources (``load_dataset(spec, data_root, download)``):

``digits`` (the default)
    scikit-learn's bundled ``load_digits``: 1797 grey 8 x 8 images, pixel values 0..16,
    10 classes; needs no files. The split is fixed: ``perm =
    numpy.random.default_rng(0).permutation(1797)``; the training split is
    ``perm[:1437]`` and the test split is ``perm[1437:]`` (360 images), each in that
    permutation order (so training index ``i`` is scikit-learn's example ``perm[i]``).
``fashion-mnist``, ``mnist``
    The original IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; gzipped or not) read from
    ``data_root``, or from torchvision's layout ``data_root/FashionMNIST/raw`` /
    ``data_root/MNIST/raw``. 60000 / 10000 grey 28 x 28 images in file order.
    ``download=True`` fetches them with torchvision (into ``data_root/<Name>/raw``) when
    they are not already there. The two share file names, so the real files of one are
    recognised by their first training labels and refused when loaded as the other.
``cifar10``, ``cifar100``
    torchvision's ``CIFAR10`` / ``CIFAR100`` under ``data_root`` (the folder holding
    ``cifar-10-batches-py`` / ``cifar-100-python``); 50000 / 10000 RGB 32 x 32 images,
    CIFAR-100 with its 100 fine labels.
``npz:PATH``
    A NumPy ``.npz`` with arrays ``x_train, y_train, x_test, y_test``. ``x`` is either
    images, ``N x H x W`` (one channel), ``N x H x W x C`` (channels last, C in 1, 3, 4) or
    ``N x C x H x W`` (taken as channels first only when the last axis is not 1, 3 or 4),
    or feature vectors ``N x D``. ``y`` holds 1-D integer labels ``0..C-1``;
    ``num_classes`` is the largest label in train and test plus one, and every class
    below it must occur in train or test (a gap means the labels are not ``0..C-1``).
``hf:PATH``
    A Hugging Face ``datasets`` folder written by ``save_to_disk`` (``Dataset`` or
    ``DatasetDict``), read in batches by ``prune.data.hf`` (its docstring has the details):
    ``split`` picks the training split of a ``DatasetDict`` (default ``train``; the test
    side is ``test`` when present, else empty), ``label_column`` (default ``label``)
    the integer labels, and ``image_column`` (default ``image``) or ``feature_column``
    (precomputed vectors) the inputs. ``LoadedData.split`` and ``.columns`` record them.

Normalisation: images are standardised per channel with the mean and (population)
standard deviation of the *training* split; feature vectors per feature, likewise (a
constant feature keeps std 1). Both splits use the training statistics, which are kept
in ``LoadedData.mean`` / ``LoadedData.std`` in the source's raw units (0..255 pixels,
0..16 for digits), so ``x * std + mean`` gives the raw values back.

Labels are identified by ``label_fingerprint``: the same labels in the same order give
the same fingerprint whatever loaded them. Nothing is cached between calls.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from prune.errors import PruneError

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "npz:PATH", "hf:PATH")

DIGITS_TRAIN = 1437
DIGITS_TEST = 360

_FINGERPRINT_PREFIX = b"prune.labels/1\n"

# canonical name -> (display name, torchvision sub-folder)
_IDX_SETS = {"fashion-mnist": ("Fashion-MNIST", "FashionMNIST"), "mnist": ("MNIST", "MNIST")}
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
# canonical name -> (display name, torchvision class name, folder, classes)
_CIFAR_SETS = {
    "cifar10": ("CIFAR-10", "CIFAR10", "cifar-10-batches-py", 10),
    "cifar100": ("CIFAR-100", "CIFAR100", "cifar-100-python", 100),
}
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


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
        return record


# ----------------------------------------------------------------------------- labels


def label_fingerprint(labels) -> str:
    """``"sha256:<hex>"`` over ``b"prune.labels/1\\n"`` + the labels as little-endian int64."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise PruneError(f"labels must be a 1-D sequence, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise PruneError(f"labels must be integers, got dtype {arr.dtype}")
    data = np.ascontiguousarray(arr.astype("<i8", copy=False)).tobytes()
    return "sha256:" + hashlib.sha256(_FINGERPRINT_PREFIX + data).hexdigest()


def flip_labels(
    labels: torch.Tensor, fraction: float, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label noise: flip ``round(fraction * n)`` labels, each to a different random class.

    The examples are drawn uniformly without replacement and each new class uniformly
    among the ``num_classes - 1`` others, all from ``torch.Generator().manual_seed(seed)``.
    Returns ``(noisy_labels, flipped_indices)`` with the indices sorted ascending; the
    input is not modified.
    """
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise PruneError(
            f"label-noise fraction must be a number in [0, 1), got {fraction!r}"
        ) from None
    if math.isnan(fraction) or not 0 <= fraction < 1:
        raise PruneError(f"label-noise fraction must be in [0, 1), got {fraction!r}")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise PruneError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    noisy = labels.detach().to(torch.int64).clone()
    n = len(noisy)
    k = round(fraction * n)
    if k == 0:
        return noisy, torch.empty(0, dtype=torch.int64)
    if num_classes < 2:
        raise PruneError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    if int(noisy.min()) < 0 or int(noisy.max()) >= num_classes:
        raise PruneError(f"labels must lie in 0..{num_classes - 1} to flip them")
    gen = torch.Generator().manual_seed(int(seed))
    idx, _ = torch.randperm(n, generator=gen)[:k].sort()
    offsets = torch.randint(1, num_classes, (k,), generator=gen, dtype=torch.int64)
    noisy[idx] = (noisy[idx] + offsets) % num_classes
    return noisy, idx


def take(split: Split, indices) -> Split:
    """The examples at ``indices`` (in that order) as a new ``Split``."""
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64).reshape(-1)
    return Split(split.x[idx], split.y[idx])


# ----------------------------------------------------------------------------- loading


def load_dataset(spec: str, data_root: str | None = None, download: bool = False, *,
                 split: str | None = None, image_column: str | None = None,
                 label_column: str | None = None, feature_column: str | None = None) -> LoadedData:
    """Load ``spec`` (one of ``DATASETS``; ``npz:PATH`` for a file) into memory.

    ``split``, ``image_column``, ``label_column`` and ``feature_column`` apply to ``hf:PATH``
    only (``prune.data.hf``); ``None`` means the default.
    """
    if not isinstance(spec, str):
        raise PruneError(f"dataset must be a name, got {spec!r}")
    spec = spec.strip()
    hf_options = {"split": split, "image_column": image_column, "label_column": label_column,
                  "feature_column": feature_column}
    if spec[:3].lower() == "hf:":
        if data_root is not None and str(data_root).strip():
            raise PruneError("--data-root does not apply to hf: datasets; give the folder as hf:PATH")
        if download:
            raise PruneError("--download does not apply to hf: datasets; save one with save_to_disk first")
        from prune.data import hf

        return hf.load(spec, **hf_options)
    given = [name for name, value in hf_options.items() if value is not None]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        verb = "applies" if len(given) == 1 else "apply"
        raise PruneError(f"{flags} {verb} only to hf: datasets, not to {spec!r}; drop {'it' if len(given) == 1 else 'them'}")
    if spec[:4].lower() == "npz:":
        return _load_npz(spec[4:])
    name = spec.lower().replace("_", "-")
    name = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(
        name, name
    )
    if name == "digits":
        return _load_digits()
    if name in _IDX_SETS:
        return _load_idx(name, data_root, download)
    if name in _CIFAR_SETS:
        return _load_cifar(name, data_root, download)
    raise PruneError(f"unknown dataset {spec!r}; choose one of: {', '.join(DATASETS)}")


def _finish(source: str, x_train, y_train, x_test, y_test, num_classes: int) -> LoadedData:
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


def _load_digits() -> LoadedData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None]  # N x 1 x 8 x 8, values 0..16
    labels = bunch.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(labels))
    tr, te = perm[:DIGITS_TRAIN], perm[DIGITS_TRAIN:]
    return _finish("digits", images[tr], labels[tr], images[te], labels[te], 10)


def _root(data_root, display: str, hint: str) -> Path:
    if data_root is None or str(data_root).strip() == "":
        raise PruneError(
            f"{display} needs --data-root DIR ({hint}); add --download to fetch the files into DIR"
        )
    return Path(data_root).expanduser()


# ---- MNIST / Fashion-MNIST


def _find_idx_files(
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


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise PruneError(
            f"cannot read {path}: {exc}; delete it and pass --download, or replace it"
        ) from None
    return raw


def _read_idx(path: Path, images: bool) -> np.ndarray:
    """One IDX file, header checked: images -> N x 28 x 28 uint8, labels -> N uint8."""
    data = _read_bytes(path)
    magic, header = (2051, 16) if images else (2049, 8)
    bad = f"{path} is not a valid IDX {'image' if images else 'label'} file"
    if len(data) < header:
        raise PruneError(f"{bad} (only {len(data)} bytes); replace it or pass --download")
    fields = np.frombuffer(data, dtype=">u4", count=header // 4)
    if int(fields[0]) != magic:
        raise PruneError(f"{bad} (magic number {int(fields[0])}, expected {magic}); replace it")
    n = int(fields[1])
    if images:
        rows, cols = int(fields[2]), int(fields[3])
        if (rows, cols) != (28, 28):
            raise PruneError(f"{bad} (images are {rows} x {cols}, expected 28 x 28); replace it")
    size = n * (784 if images else 1)
    if len(data) - header != size:
        raise PruneError(
            f"{bad} (header says {n} items but it holds {len(data) - header} data bytes, "
            f"expected {size}); the file is truncated or corrupt, replace it"
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header)
    return arr.reshape(n, 28, 28) if images else arr


def _torchvision_download(cls_name: str, root: Path, display: str, **kwargs) -> object:
    import torchvision.datasets as tvd

    try:
        root.mkdir(parents=True, exist_ok=True)
        return getattr(tvd, cls_name)(root=str(root), download=True, **kwargs)
    except PruneError:
        raise
    except Exception as exc:  # network errors come in many types
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PruneError(
            f"downloading {display} into {root} failed ({msg}); "
            f"check the network, or put the files there yourself and drop --download"
        ) from None


def _load_idx(name: str, data_root, download: bool) -> LoadedData:
    display, sub = _IDX_SETS[name]
    root = _root(data_root, display, f"the folder holding {_IDX_FILES[0]}.gz etc.")
    files, partial, missing = _find_idx_files(root, sub)
    if files is None and download:
        _torchvision_download(sub, root, display, train=True)
        files, partial, missing = _find_idx_files(root, sub)
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
                f"the files in {files[_IDX_FILES[1]].parent} are {_IDX_SETS[other][0]}, "
                f"not {display}; "
                f"load them as {other!r}, or point --data-root at the {display} files"
            )
    return _finish(name, x_train[:, None], y_train, x_test[:, None], y_test, 10)


# ---- CIFAR


def _load_cifar(name: str, data_root, download: bool) -> LoadedData:
    import torchvision.datasets as tvd

    display, cls_name, folder, classes = _CIFAR_SETS[name]
    root = _root(data_root, display, f"the folder holding {folder}")
    if root.name == folder and not (root / folder).exists():
        root = root.parent  # the user pointed at the batches folder itself
    cls = getattr(tvd, cls_name)
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=False)
        except RuntimeError:
            if not download and (root / folder).is_dir():
                raise PruneError(
                    f"the {display} files in {root / folder} are incomplete or corrupt "
                    f"(checksum mismatch); delete them and pass --download, or replace them"
                ) from None
            if not download:
                raise PruneError(
                    f"no {display} files in {root} (expected {root / folder}); "
                    f"pass --data-root DIR or --download"
                ) from None
            ds = _torchvision_download(cls_name, root, display, train=train)
        except Exception as exc:  # present but unreadable (truncated pickle, permissions, ...)
            raise PruneError(
                f"cannot read the {display} files in {root / folder} "
                f"({type(exc).__name__}: {exc}); delete them and pass --download, or replace them"
            ) from None
        images = np.asarray(ds.data).transpose(0, 3, 1, 2)  # N x 32 x 32 x 3 -> N x 3 x 32 x 32
        splits.append((images, np.asarray(ds.targets, dtype=np.int64)))
    (xtr, ytr), (xte, yte) = splits
    return _finish(name, xtr, ytr, xte, yte, classes)


# ---- npz


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


def _load_npz(path_text: str) -> LoadedData:
    if not path_text.strip():
        raise PruneError("npz: needs a file path, e.g. npz:data/my_set.npz")
    path = Path(path_text.strip()).expanduser().resolve()
    if not path.is_file():
        raise PruneError(f"no such npz file: {path}; check the path after 'npz:'")
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
            arrays = {k: archive[k] for k in _NPZ_KEYS}
        except ValueError as exc:  # object arrays need pickle
            raise PruneError(
                f"cannot read arrays in {path} ({exc}); store plain numeric arrays"
            ) from None

    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
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
        if int(y.min()) < 0:
            raise PruneError(
                f"y_{split} in {path} has negative label {int(y.min())}; labels must be 0..C-1"
            )
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise PruneError(
                f"x_{split} in {path} contains NaN or infinite values; clean them first"
            )

    x_train = _npz_images(arrays["x_train"], "x_train", path)
    x_test = _npz_images(arrays["x_test"], "x_test", path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise PruneError(
            f"x_train and x_test in {path} have different example shapes "
            f"({x_train.shape[1:]} vs {x_test.shape[1:]}); both splits need the same shape"
        )
    y_train, y_test = arrays["y_train"].astype(np.int64), arrays["y_test"].astype(np.int64)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    if num_classes < 2:
        raise PruneError(
            f"{path} has only one class (all labels 0); labels must span at least 0..1"
        )
    present = np.union1d(np.unique(y_train), np.unique(y_test))
    if len(present) != num_classes:
        gaps = sorted(set(range(num_classes)) - set(present.tolist()))
        shown = ", ".join(map(str, gaps[:5])) + (", ..." if len(gaps) > 5 else "")
        raise PruneError(
            f"labels in {path} run up to {num_classes - 1} but never use {shown}; labels must be "
            f"0..C-1 with every class used (remap them with numpy.unique(y, return_inverse=True))"
        )
    return _finish(f"npz:{path}", x_train, y_train, x_test, y_test, num_classes)
