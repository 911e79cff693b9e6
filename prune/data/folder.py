"""Image folders (``folder:PATH``) in torchvision's ImageFolder layout, decoded into memory.

Layout: ``PATH/train/<class>/<image>`` with an optional test side ``PATH/test/`` (else
``PATH/val/``) of the same form; a ``PATH`` without a ``train`` folder is all training side
(``PATH/<class>/<image>``) and has no test split. Classes are the training side's folder
names, sorted, and the files are listed as torchvision lists them
(``torchvision.datasets.folder.find_classes`` and ``make_dataset``: by class, then by path; the
extensions of ``IMG_EXTENSIONS``). A test class the training side lacks is an error.

Images are decoded with PIL as RGB (as ImageFolder's loader does); ``image_size`` N resizes the
shorter side to N and takes the centre N x N crop, and without it every image must have one
size. An unreadable image is a ``PruneError`` naming the file, or with ``skip_bad`` left out and
recorded. The dataset record (``LoadedData.record``) keeps the classes, ``image_size``,
``skip_bad``, the skipped files of each side (``skipped``, ``skipped_test``) and ``files_fingerprint``: a hash of the training files' paths (relative to the
training folder, in order), so a manifest names files, not only positions.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from prune.data.loaded import LoadedData, from_arrays
from prune.errors import PruneError

PREFIX = "folder:"
_FILES_PREFIX = b"prune.files/1\n"


@dataclass(frozen=True)
class FolderSide:
    """One side of an image folder: its folder and files, as (path relative to it, label) in order."""

    folder: Path
    files: list[tuple[str, int]]


@dataclass(frozen=True)
class ImageFolderTree:
    """What ``scan`` finds under ``PATH``: the classes and the training and test sides."""

    root: Path
    classes: list[str]
    train: FolderSide
    test: FolderSide | None


def folder_root(spec: str) -> Path:
    """The absolute folder of ``folder:PATH``."""
    text = spec[len(PREFIX):].strip()
    if not text:
        raise PruneError("folder: needs a folder of images, e.g. folder:data/my_images")
    return Path(text).expanduser().resolve()


def files_fingerprint(relative_paths) -> str:
    """``"sha256:<hex>"`` over ``b"prune.files/1\\n"`` and the paths, one per line."""
    digest = hashlib.sha256(_FILES_PREFIX)
    for path in relative_paths:
        digest.update(path.encode("utf-8") + b"\n")
    return "sha256:" + digest.hexdigest()


def _side(folder: Path, class_to_idx: dict[str, int]) -> FolderSide:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    return FolderSide(folder, [(Path(path).relative_to(folder).as_posix(), label) for path, label in samples])


def scan(spec: str) -> ImageFolderTree:
    """List the classes and files of ``folder:PATH`` (nothing is decoded)."""
    from torchvision.datasets.folder import find_classes

    root = folder_root(spec)
    if not root.is_dir():
        raise PruneError(f"no such folder: {root}; folder: takes a folder of class folders (PATH/<class>/*.png, "
                         "or PATH/train/<class>/... with an optional PATH/test/)")
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = next((train_dir.parent / name for name in ("test", "val")
                     if train_dir != root and (train_dir.parent / name).is_dir()), None)
    try:
        classes, class_to_idx = find_classes(str(train_dir))
    except FileNotFoundError:
        raise PruneError(f"{train_dir} holds no class folders; folder: takes PATH/<class>/<image> "
                         "(or PATH/train/<class>/<image>)") from None
    train = _side(train_dir, class_to_idx)
    if not train.files:
        raise PruneError(f"{train_dir} holds no images (extensions: .jpg, .png, ...); check the path")
    test = None
    if test_dir is not None:
        test_classes = [entry.name for entry in os.scandir(test_dir) if entry.is_dir()]
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise PruneError(f"{test_dir} has class folder(s) {', '.join(unknown[:3])} that {train_dir} lacks; "
                             "both sides need the training side's classes")
        test = _side(test_dir, class_to_idx)
    if len(classes) < 2:
        raise PruneError(f"{train_dir} has only one class folder; prune needs at least two classes")
    return ImageFolderTree(root, classes, train, test)


class _Images(torch.utils.data.Dataset):
    """Decodes one side's images: (uint8 H x W x 3 array or None, reason) per file."""

    def __init__(self, side: FolderSide, image_size: int | None):
        self.side, self.image_size = side, image_size

    def __len__(self) -> int:
        return len(self.side.files)

    def __getitem__(self, i: int):
        from PIL import Image
        import torchvision.transforms.functional as TF

        try:
            with Image.open(self.side.folder / self.side.files[i][0]) as image:
                image = image.convert("RGB")
                if self.image_size is not None:
                    image = TF.center_crop(TF.resize(image, self.image_size), self.image_size)
                return np.asarray(image, dtype=np.uint8), None
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            return None, str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _decode(side: FolderSide, image_size: int | None, skip_bad: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N x 3 x H x W uint8 images, labels, skipped files) of one side, decoded by a DataLoader."""
    workers = min(4, os.cpu_count() or 1) if len(side.files) >= 2000 else 0
    loader = torch.utils.data.DataLoader(_Images(side, image_size), batch_size=256, num_workers=workers,
                                         collate_fn=list)
    images, labels, skipped, first = [], [], [], None
    for start, batch in zip(range(0, len(side.files), 256), loader):
        for (name, label), (array, reason) in zip(side.files[start:start + 256], batch):
            if array is None:
                if not skip_bad:
                    raise PruneError(f"cannot read image {side.folder / name} ({reason}); fix or remove it, "
                                     "or pass --skip-bad to leave unreadable images out")
                skipped.append(name)
                continue
            if first is None:
                first = (name, array.shape)
            elif array.shape != first[1]:
                raise PruneError(f"images differ in size: {side.folder / first[0]} is {first[1][1]} x {first[1][0]}, "
                                 f"{side.folder / name} is {array.shape[1]} x {array.shape[0]}; pass --image-size N "
                                 "to resize them (shorter side to N, centre crop N x N)")
            images.append(array)
            labels.append(label)
    if not images:
        return np.empty((0, 3, image_size or 1, image_size or 1), np.uint8), np.empty(0, np.int64), skipped
    return np.stack(images).transpose(0, 3, 1, 2), np.asarray(labels, dtype=np.int64), skipped


def load(spec: str, *, image_size: int | None = None, skip_bad: bool = False) -> LoadedData:
    """``folder:PATH`` as a ``LoadedData`` (see the module docstring)."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise PruneError(f"--image-size must be a whole number of pixels >= 1, got {image_size!r}")
    tree = scan(spec)
    x_train, y_train, skipped = _decode(tree.train, image_size, skip_bad)
    if not len(y_train):
        raise PruneError(f"no image in {tree.train.folder} could be read; check the files")
    x_test, y_test, skipped_test = np.empty((0, *x_train.shape[1:]), np.uint8), np.empty(0, np.int64), []
    if tree.test is not None:
        x_test, y_test, skipped_test = _decode(tree.test, image_size, skip_bad)
    if len(y_test) and x_test.shape[1:] != x_train.shape[1:]:
        raise PruneError(f"the images of {tree.test.folder} are {x_test.shape[3]} x {x_test.shape[2]}, those of "
                         f"{tree.train.folder} {x_train.shape[3]} x {x_train.shape[2]}; pass --image-size N")
    if not len(y_test):
        x_test = np.empty((0, *x_train.shape[1:]), np.uint8)
    bad = set(skipped)
    used = [name for name, _ in tree.train.files if name not in bad]
    data = from_arrays(f"{PREFIX}{tree.root}", x_train, y_train, x_test, y_test, len(tree.classes))
    details = {"classes": tree.classes, "image_size": image_size, "skip_bad": skip_bad, "skipped": skipped,
               "skipped_test": skipped_test, "files_fingerprint": files_fingerprint(used)}
    return replace(data, details=details)
