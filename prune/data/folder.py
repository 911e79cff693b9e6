"""Image folders (``folder:PATH``) in torchvision's ImageFolder layout, read from disk batch by batch.

Layout: ``PATH/train/<class>/<image>`` with an optional test side ``PATH/test/`` (else
``PATH/val/``) of the same form; a ``PATH`` without a ``train`` folder is all training side
(``PATH/<class>/<image>``) and has no test split. Classes are the training side's folder
names, sorted, and the files are listed as torchvision lists them
(``torchvision.datasets.folder.find_classes`` and ``make_dataset``: by class, then by path; the
extensions of ``IMG_EXTENSIONS``). A test class the training side lacks is an error.

Images are decoded with PIL as RGB (as ImageFolder's loader does); ``image_size`` N resizes the
shorter side to N and takes the centre N x N crop, and without it every image must have one
size. The splits' inputs are ``prune.data.streaming.LazyImages``: they stay on disk and are
decoded batch by batch, so memory does not grow with the number of images (apart from the
labels and file names); they are normalised like the other sources, with the training side's
per-channel mean and standard deviation. An unreadable image is a ``PruneError`` naming the file, or with ``skip_bad`` left out and
recorded. The dataset record (``LoadedData.record``) keeps the classes, ``image_size``,
``skip_bad``, the skipped files of each side (``skipped``, ``skipped_test``) and ``files_fingerprint``: a hash of the training files' paths (relative to the
training folder, in order), so a manifest names files, not only positions.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prune.atomic import input_kind
from prune.data.loaded import LoadedData, Split
from prune.data.streaming import MIN_FOR_WORKERS, WORKERS, ImageFileDecoder, LazyImages, stats_from_sums
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
    """The image files of each class folder, listed as torchvision's ``make_dataset`` lists them (links
    followed; by class, then by folder path, then by name), but no folder twice (``_walk``)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    files = []
    for name in sorted(class_to_idx):
        target = folder / name
        if not target.is_dir():
            continue
        for root, names in sorted(_walk(target)):
            files += [(Path(root, file).relative_to(folder).as_posix(), class_to_idx[name]) for file in sorted(names)
                      if file.lower().endswith(IMG_EXTENSIONS)]
    return FolderSide(folder, files)


def _walk(top: Path):
    """(folder, file names) of every folder under ``top``, links followed; a folder reached a second time
    (a link that loops back, or two links to one folder) is a ``PruneError``: its images would count again."""
    seen: dict[tuple[int, int], str] = {}
    for root, _, names in os.walk(top, followlinks=True):
        info = os.stat(root)
        first = seen.setdefault((info.st_dev, info.st_ino), root)
        if first != root:
            raise PruneError(f"{root} is the folder {first} again (a symbolic link loops back to it, or two links "
                             "lead to it), so its images would be counted more than once: remove the link")
        yield root, names


def scan(spec: str) -> ImageFolderTree:
    """List the classes and files of ``folder:PATH`` (nothing is decoded)."""
    from torchvision.datasets.folder import find_classes

    root = folder_root(spec)
    if input_kind(root, "folder") != "folder":
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


class _Checked(torch.utils.data.Dataset):
    """File ``i`` read once: ((H, W, C), per-channel sums of pixels and of their squares), or (None, why not)."""

    def __init__(self, decoder: ImageFileDecoder):
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.decoder)

    def __getitem__(self, i: int):
        from PIL import Image

        try:
            pixels = self.decoder.pixels(i)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            return None, str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        flat = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64)
        return (pixels.shape, flat.sum(0), (flat * flat).sum(0)), None


def _check(side: FolderSide, image_size: int | None, skip_bad: bool):
    """Read every image of ``side`` once (a DataLoader with workers); nothing is kept but what it returns:
    (readable files' positions, skipped names, image shape H x W x C or None, pixel sums, sums of squares, pixels)."""
    decoder = ImageFileDecoder([side.folder / name for name, _ in side.files], image_size, (0.0,), (1.0,))
    loader = torch.utils.data.DataLoader(_Checked(decoder), batch_size=256, collate_fn=list,
                                         num_workers=WORKERS if len(decoder) >= MIN_FOR_WORKERS else 0)
    kept, skipped, first, total, squares = [], [], None, 0.0, 0.0
    for i, (found, reason) in enumerate(item for batch in loader for item in batch):
        name = side.files[i][0]
        if found is None:
            if not skip_bad:
                raise PruneError(f"cannot read image {side.folder / name} ({reason}); fix or remove it, "
                                 "or pass --skip-bad to leave unreadable images out")
            skipped.append(name)
            continue
        shape, sums, sums_of_squares = found
        if first is None:
            first = (name, shape)
        elif shape != first[1]:
            raise PruneError(f"images differ in size: {side.folder / first[0]} is {first[1][1]} x {first[1][0]}, "
                             f"{side.folder / name} is {shape[1]} x {shape[0]}; pass --image-size N "
                             "to resize them (shorter side to N, centre crop N x N)")
        kept.append(i)
        total, squares = total + sums, squares + sums_of_squares
    pixels = len(kept) * (first[1][0] * first[1][1] if first else 0)
    return np.asarray(kept, dtype=np.int64), skipped, first and first[1], total, squares, pixels


def load(spec: str, *, image_size: int | None = None, skip_bad: bool = False) -> LoadedData:
    """``folder:PATH`` as a ``LoadedData`` of ``LazyImages`` (see the module docstring).

    Every image is read once here, to find unreadable files and sizes and to compute the
    per-channel mean and standard deviation of the training side; training and feature
    passes then decode batch by batch.
    """
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise PruneError(f"--image-size must be a whole number of pixels >= 1, got {image_size!r}")
    tree = scan(spec)
    kept, skipped, shape, total, squares, pixels = _check(tree.train, image_size, skip_bad)
    if shape is None:
        raise PruneError(f"no image in {tree.train.folder} could be read; check the files")
    mean, std = stats_from_sums(total, squares, pixels)
    image_shape = (shape[2], shape[0], shape[1])
    splits, skipped_test = [], []
    for side, positions in ((tree.train, kept), (tree.test, None)):
        if side is None:
            splits.append(Split(LazyImages(ImageFileDecoder([], image_size, mean, std), image_shape),
                                torch.empty(0, dtype=torch.int64)))
            continue
        if positions is None:
            positions, skipped_test, test_shape, *_ = _check(side, image_size, skip_bad)
            if test_shape is not None and test_shape != shape:
                raise PruneError(f"the images of {side.folder} are {test_shape[1]} x {test_shape[0]}, those of "
                                 f"{tree.train.folder} {shape[1]} x {shape[0]}; pass --image-size N")
        files = [side.files[i] for i in positions]
        decoder = ImageFileDecoder([side.folder / name for name, _ in files], image_size, mean, std)
        splits.append(Split(LazyImages(decoder, image_shape), torch.tensor([label for _, label in files],
                                                                           dtype=torch.int64)))
    used = [tree.train.files[i][0] for i in kept]
    details = {"classes": tree.classes, "image_size": image_size, "skip_bad": skip_bad, "skipped": skipped,
               "skipped_test": skipped_test, "files_fingerprint": files_fingerprint(used)}
    return LoadedData(source=f"{PREFIX}{tree.root}", train=splits[0], test=splits[1], num_classes=len(tree.classes),
                      mean=mean, std=std, details=details,
                      eval_split=None if tree.test is None else tree.test.folder.name)
