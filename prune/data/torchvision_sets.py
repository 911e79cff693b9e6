"""Sets torchvision provides (``cifar10``, ``cifar100``), and its downloader the IDX sets use too.

CIFAR's images stay as torchvision reads them, uint8 N x 32 x 32 x 3 (150 MB for the training
side, a quarter of a float32 tensor), and are converted and normalised a batch at a time
(``prune.data.streaming.UInt8Decoder``), with the training side's per-channel statistics.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from prune.data.loaded import LoadedData, Split
from prune.data.streaming import LazyImages, UInt8Decoder, channel_stats
from prune.errors import PruneError

# canonical name -> (display name, torchvision class name, folder, classes)
CIFAR_SETS = {
    "cifar10": ("CIFAR-10", "CIFAR10", "cifar-10-batches-py", 10),
    "cifar100": ("CIFAR-100", "CIFAR100", "cifar-100-python", 100),
}


CHUNK = 5000  # images per step of the statistics pass
ROOT_ENV = "PRUNE_DATA_ROOT"  # the folder of the files when --data-root is not given


def given_root(data_root) -> str | None:
    """``data_root`` if given, else ``$PRUNE_DATA_ROOT`` (None when neither is set)."""
    if data_root is not None and str(data_root).strip():
        return str(data_root)
    return os.environ.get(ROOT_ENV, "").strip() or None


def root_folder(data_root, display: str, hint: str) -> Path:
    """``data_root`` (or ``$PRUNE_DATA_ROOT``) as a path; a ``PruneError`` saying what it should hold when neither is set."""
    root = given_root(data_root)
    if root is None:
        raise PruneError(
            f"{display} needs --data-root DIR or ${ROOT_ENV} ({hint}); add --download to fetch the files into DIR"
        )
    return Path(root).expanduser()


def torchvision_download(cls_name: str, root: Path, display: str, **kwargs) -> object:
    """torchvision's ``cls_name`` dataset downloaded into ``root``; a failure is one ``PruneError``."""
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


def load_cifar(name: str, data_root, download: bool) -> LoadedData:
    """``cifar10`` or ``cifar100`` through torchvision from ``data_root`` (downloaded if asked and absent)."""
    import torchvision.datasets as tvd

    display, cls_name, folder, classes = CIFAR_SETS[name]
    root = root_folder(data_root, display, f"the folder holding {folder}")
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
            ds = torchvision_download(cls_name, root, display, train=train)
        except Exception as exc:  # present but unreadable (truncated pickle, permissions, ...)
            raise PruneError(
                f"cannot read the {display} files in {root / folder} "
                f"({type(exc).__name__}: {exc}); delete them and pass --download, or replace them"
            ) from None
        splits.append((np.asarray(ds.data), torch.tensor(ds.targets, dtype=torch.int64)))  # uint8 N x 32 x 32 x 3
    (xtr, ytr), (xte, yte) = splits
    chunks = (xtr[i:i + CHUNK].transpose(0, 3, 1, 2) for i in range(0, len(xtr), CHUNK))
    mean, std = channel_stats(chunks)
    train, test = (Split(LazyImages(UInt8Decoder(x, mean, std), (x.shape[3], *x.shape[1:3])), y)
                   for x, y in ((xtr, ytr), (xte, yte)))
    return LoadedData(source=name, train=train, test=test, num_classes=classes, mean=mean, std=std)
