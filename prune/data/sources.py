"""The sources ``load_dataset`` knows; each becomes one ``LoadedData`` of float32 tensors.

Sources (``load_dataset(spec, data_root, download, options)``, ``options`` a ``SourceOptions``):

``digits`` (the default)
    scikit-learn's bundled ``load_digits``: 1797 grey 8 x 8 images, pixel values 0..16,
    10 classes; needs no files. The split is fixed: ``perm =
    numpy.random.default_rng(0).permutation(1797)``; the training split is
    ``perm[:1437]`` and the test split is ``perm[1437:]`` (360 images), each in that
    permutation order (so training index ``i`` is scikit-learn's example ``perm[i]``).
``fashion-mnist``, ``mnist``
    The original IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; gzipped or not) read from
    ``data_root`` (``$PRUNE_DATA_ROOT`` when not given), or from torchvision's layout
    ``data_root/FashionMNIST/raw`` / ``data_root/MNIST/raw``. 60000 / 10000 grey 28 x 28 images in file order.
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
``folder:PATH``
    Images in torchvision's ImageFolder layout (``PATH/<class>/*.png`` or ``PATH/train/...``
    with ``PATH/test/`` or ``PATH/val/``), read by ``prune.data.folder`` (its docstring has the
    details): ``image_size`` resizes them, ``skip_bad`` leaves unreadable files out.

Each source has its own module (``digits`` is here; ``prune.data.idx``,
``prune.data.torchvision_sets``, ``prune.data.npz``, ``prune.data.hf``, ``prune.data.folder``); all of them normalise
with the training statistics (``prune.data.loaded``). Nothing is cached between calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prune.data import folder, hf
from prune.data.idx import IDX_SETS, find_idx_files, load_idx
from prune.data.loaded import LoadedData, from_arrays
from prune.data.npz import load_npz
from prune.data.torchvision_sets import CIFAR_SETS, given_root, load_cifar
from prune.errors import PruneError

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "npz:PATH", "hf:PATH", "folder:PATH")
ROOTED = (*IDX_SETS, *CIFAR_SETS)  # the sources read from a folder: --data-root, else $PRUNE_DATA_ROOT

DIGITS_TRAIN = 1437
DIGITS_TEST = 360


@dataclass(frozen=True)
class SourceOptions:
    """The options of one kind of source, ``None`` meaning its default.

    ``split`` (the training split of a ``DatasetDict``), ``image_column``, ``label_column``,
    ``feature_column`` and ``eval_split`` apply to ``hf:PATH`` (``prune.data.hf``);
    ``image_size`` and ``skip_bad`` to ``folder:PATH`` (``prune.data.folder``).
    """

    split: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    feature_column: str | None = None
    eval_split: str | None = None
    image_size: int | None = None
    skip_bad: bool = False

    def hf(self) -> dict:
        """The ``hf:`` keywords (``prune.data.hf.load``)."""
        return {"split": self.split, "image_column": self.image_column, "label_column": self.label_column,
                "feature_column": self.feature_column, "eval_split": self.eval_split}

    def check(self, spec: str) -> None:
        """Refuse the options that do not apply to ``spec``'s kind of source, naming them as options."""
        given = [f"--{name.replace('_', '-')}" for name, value in self.hf().items() if value is not None]
        if spec[:len(folder.PREFIX)].lower() == folder.PREFIX:
            if given:
                raise PruneError(f"{', '.join(given)} apply only to hf: datasets, not to folder:; drop them")
            return
        if self.image_size is not None or self.skip_bad:
            raise PruneError(f"--image-size and --skip-bad apply only to folder: datasets, not to {spec!r}; drop them")
        if given and spec[:3].lower() != "hf:":
            verb = "applies" if len(given) == 1 else "apply"
            raise PruneError(f"{', '.join(given)} {verb} only to hf: datasets, not to {spec!r}; "
                             f"drop {'it' if len(given) == 1 else 'them'}")


def load_dataset(spec: str, data_root: str | None = None, download: bool = False,
                 options: SourceOptions | None = None, **keywords) -> LoadedData:
    """Load ``spec`` (one of ``DATASETS``; ``npz:PATH`` for a file): float32 tensors in memory, or for
    image folders, ``hf:`` images and CIFAR ``prune.data.streaming.LazyImages`` decoded batch by batch.

    ``options`` (``SourceOptions``) are the ``hf:`` split and columns and the ``folder:`` image size
    and ``skip_bad``; its fields may be given as keywords instead (``split="validation"``). Options
    that do not apply to ``spec`` are refused.
    """
    if keywords:
        if options is not None:
            raise TypeError("load_dataset takes options or their keywords, not both")
        options = SourceOptions(**keywords)
    options = options or SourceOptions()
    if not isinstance(spec, str):
        raise PruneError(f"dataset must be a name, got {spec!r}")
    spec = spec.strip()
    if spec[:len(folder.PREFIX)].lower() == folder.PREFIX:
        if data_root is not None and str(data_root).strip():
            raise PruneError("--data-root does not apply to folder: datasets; give the folder as folder:PATH")
        options.check(spec)
        return folder.load(spec, image_size=options.image_size, skip_bad=options.skip_bad)
    options.check(spec)
    if spec[:3].lower() == "hf:":
        if data_root is not None and str(data_root).strip():
            raise PruneError("--data-root does not apply to hf: datasets; give the folder as hf:PATH")
        if download:
            raise PruneError("--download does not apply to hf: datasets; save one with save_to_disk first")
        return hf.load(spec, **options.hf())
    if spec[:4].lower() == "npz:":
        return load_npz(spec[4:])
    name = _canonical(spec)
    if name == "digits":
        return _load_digits()
    if name in IDX_SETS:
        return load_idx(name, data_root, download)
    if name in CIFAR_SETS:
        return load_cifar(name, data_root, download)
    raise PruneError(f"unknown dataset {spec!r}; choose one of: {', '.join(DATASETS)}")


def _canonical(name: str) -> str:
    name = name.strip().lower().replace("_", "-")
    return {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(name, name)


def source_paths(spec: str | None, data_root: str | None = None) -> list[Path]:
    """The files and folders ``load_dataset(spec, data_root)`` reads: the inputs no output may replace."""
    spec = spec.strip() if isinstance(spec, str) else ""
    if spec[:3].lower() == "hf:" or spec[:4].lower() == "npz:" or spec[:7].lower() == "folder:":
        path = spec.split(":", 1)[1].strip()
        return [Path(path).expanduser()] if path else []
    name = _canonical(spec)
    data_root = given_root(data_root)
    if data_root is None:
        return []
    root = Path(data_root).expanduser()
    if name in IDX_SETS:
        files = find_idx_files(root, IDX_SETS[name][1])[0]
        return list(files.values()) if files else []
    if name in CIFAR_SETS:
        return [root / CIFAR_SETS[name][2]]
    return []


def source_stem(spec: str) -> str:
    """A source's short name for file names (of ``spec`` or a ``LoadedData.source``): the dataset's
    name, or the stem of an ``npz:``/``hf:`` path, or a ``folder:``'s name (``folder:/data/cifar10``: cifar10)."""
    spec = spec.strip()
    if spec[:3].lower() == "hf:" or spec[:4].lower() == "npz:" or spec[:7].lower() == "folder:":
        path = Path(spec.split(":", 1)[1].strip()).expanduser()
        name = path.name if spec[:7].lower() == "folder:" else path.stem
        return name or path.resolve().name  # "folder:." is the working folder's name
    return _canonical(spec)


def data_root_used(source: str, data_root: str | None) -> str | None:
    """The folder a loaded ``source`` (``LoadedData.source``) was read from: None for those that read none."""
    return given_root(data_root) if source in ROOTED else None


def _load_digits() -> LoadedData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None]  # N x 1 x 8 x 8, values 0..16
    labels = bunch.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(labels))
    tr, te = perm[:DIGITS_TRAIN], perm[DIGITS_TRAIN:]
    return from_arrays("digits", images[tr], labels[tr], images[te], labels[te], 10)
