"""Images read from files batch by batch (``ImageFiles``), and ``batches``: any split's inputs, batch by batch.

``ImageFiles`` stands in for a split's ``x`` tensor when the images stay on disk (``folder:``): it
has the tensor's ``len``, ``shape`` and ``ndim``, indexing it gives another ``ImageFiles`` (a
selection of its files, nothing decoded), and ``.to(device)`` decodes it into one tensor.
Loops over data go through ``batches``, which indexes a tensor in place and decodes
``ImageFiles`` in a ``DataLoader`` with worker processes -- with pinned memory and
non-blocking copies on CUDA -- so memory holds a few batches, whatever the dataset's size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

#: decoding processes per DataLoader: up to 4, no more than the cores this process may use
WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
#: fewer images than this are decoded in-process: starting workers (~0.3 s) costs more than decoding
#: them (~0.5 ms each for small PNGs)
MIN_FOR_WORKERS = 2048


class Decoder(torch.utils.data.Dataset):
    """File ``i`` as a normalised float32 C x H x W tensor: decoded as RGB, resized, ``(x - mean) / std``."""

    def __init__(self, files: list[Path], image_size: int | None, mean, std):
        self.files, self.image_size = files, image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def pixels(self, i: int) -> np.ndarray:
        """File ``i`` as uint8 H x W x 3 (an unreadable file raises OSError or ValueError)."""
        from PIL import Image
        import torchvision.transforms.functional as TF

        with Image.open(self.files[i]) as image:
            image = image.convert("RGB")
            if self.image_size is not None:
                image = TF.center_crop(TF.resize(image, self.image_size), self.image_size)
            return np.asarray(image, dtype=np.uint8)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(self.pixels(i).transpose(2, 0, 1).astype(np.float32))
        return (x - self.mean) / self.std


class ImageFiles:
    """A split's images as files (``positions`` into ``decoder``'s list), decoded only when read."""

    ndim = 4

    def __init__(self, decoder: Decoder, image_shape: tuple[int, int, int], positions: np.ndarray | None = None):
        self.decoder, self.image_shape = decoder, tuple(image_shape)
        self.positions = np.arange(len(decoder)) if positions is None else positions

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.image_shape))

    def __getitem__(self, index) -> "ImageFiles":
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return ImageFiles(self.decoder, self.image_shape, np.atleast_1d(self.positions[index]))

    def to(self, device, non_blocking: bool = False) -> torch.Tensor:
        """All of these images as one tensor on ``device``."""
        if not len(self):
            return torch.empty(self.shape, device=device)
        return torch.cat(list(batches(self, [slice(0, len(self))], torch.device(device))))


def batches(x, index_batches: Iterable, device: torch.device) -> Iterator[torch.Tensor]:
    """``x[index]`` on ``device`` for each index (a slice or integer indices) in ``index_batches``, in order."""
    cuda = torch.device(device).type == "cuda"
    if not isinstance(x, ImageFiles):
        for index in index_batches:
            if isinstance(index, torch.Tensor):
                index = index.to(x.device)
            yield x[index].to(device, non_blocking=cuda)
        return
    plan = [x.positions[index.cpu().numpy() if isinstance(index, torch.Tensor) else index].tolist()
            for index in index_batches]
    workers = WORKERS if sum(map(len, plan)) >= MIN_FOR_WORKERS else 0
    loader = torch.utils.data.DataLoader(x.decoder, batch_sampler=plan, num_workers=workers, pin_memory=cuda)
    for xb in loader:
        yield xb.to(device, non_blocking=cuda)
