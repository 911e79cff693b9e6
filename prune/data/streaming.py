"""Images decoded batch by batch (``LazyImages``), and ``batches``: any split's inputs, batch by batch.

``LazyImages`` stands in for a split's ``x`` tensor when the images are not held as one float
tensor: files on disk (``folder:``, ``ImageFileDecoder``), rows of a Hugging Face dataset
(``hf:`` images, ``prune.data.hf``) or a uint8 array (CIFAR, ``UInt8Decoder``). It has the
tensor's ``len``, ``shape`` and ``ndim``, indexing it gives another ``LazyImages`` (a selection
of its rows, nothing decoded), and ``.to(device)`` decodes it into one tensor. Loops over data
go through ``batches``, which indexes a tensor in place and decodes ``LazyImages`` in a
``DataLoader`` -- with worker processes where decoding is work (files, hf: images), with pinned
memory and non-blocking copies on CUDA -- so memory holds a few batches of float32, whatever the
dataset's size.

A decoder is a ``torch.utils.data.Dataset`` whose ``__getitems__(positions)`` gives one
normalised float32 batch, ``(x - mean) / std`` per channel (the training side's statistics).
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


class Normalised(torch.utils.data.Dataset):
    """A decoder: rows ``positions`` as one float32 N x C x H x W batch, ``(x - mean) / std``.

    Subclasses say how to read raw rows (``raw``: a numeric N x C x H x W array), how many rows
    they hold, and whether reading is worth worker processes (``parallel``).
    """

    parallel = True

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def raw(self, positions: list[int]) -> np.ndarray:
        raise NotImplementedError

    def __getitems__(self, positions: list[int]) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.raw(positions), dtype=np.float32))
        return (x - self.mean) / self.std

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]


class ImageFileDecoder(Normalised):
    """Image files, decoded as RGB and resized to ``image_size`` (shorter side, then the centre crop)."""

    def __init__(self, files: list[Path], image_size: int | None, mean, std):
        super().__init__(mean, std)
        self.files, self.image_size = files, image_size

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

    def raw(self, positions):
        return np.stack([self.pixels(i) for i in positions]).transpose(0, 3, 1, 2)


class UInt8Decoder(Normalised):
    """Rows of a uint8 N x H x W x C array (CIFAR's as torchvision holds them): 4 bytes per pixel
    fewer than a float32 tensor, converted a batch at a time, in-process (it is one copy)."""

    parallel = False

    def __init__(self, pixels: np.ndarray, mean, std):
        super().__init__(mean, std)
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def raw(self, positions):
        return self.pixels[positions].transpose(0, 3, 1, 2)


def channel_stats(chunks: Iterable[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation, accumulated in float64 over
    N x C x H x W chunks (``stats_from_sums``)."""
    total = squares = 0.0
    count = 0
    for chunk in chunks:
        flat = np.moveaxis(np.asarray(chunk, dtype=np.float64), 1, -1).reshape(-1, chunk.shape[1])
        total, squares, count = total + flat.sum(0), squares + (flat * flat).sum(0), count + len(flat)
    return stats_from_sums(total, squares, count)


def stats_from_sums(total, squares, count: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation from the sums of the pixels and of their
    squares over ``count`` pixels per channel; a constant channel gets std 1."""
    mean = np.atleast_1d(total) / max(count, 1)
    std = np.sqrt(np.maximum(np.atleast_1d(squares) / max(count, 1) - mean * mean, 0.0))
    std = np.where(std > 0, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class LazyImages:
    """A split's images as rows of a decoder (``positions`` into it), decoded only when read."""

    ndim = 4

    def __init__(self, decoder: Normalised, image_shape: tuple[int, int, int], positions: np.ndarray | None = None):
        self.decoder, self.image_shape = decoder, tuple(image_shape)
        self.positions = np.arange(len(decoder)) if positions is None else positions

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.image_shape))

    def __getitem__(self, index) -> "LazyImages":
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return LazyImages(self.decoder, self.image_shape, np.atleast_1d(self.positions[index]))

    def to(self, device, non_blocking: bool = False) -> torch.Tensor:
        """All of these images as one tensor on ``device``."""
        if not len(self):
            return torch.empty(self.shape, device=device)
        return torch.cat(list(batches(self, [slice(0, len(self))], torch.device(device))))


def _as_batch(batch: torch.Tensor) -> torch.Tensor:
    """The DataLoader's collate: a decoder's ``__getitems__`` already gives the batch."""
    return batch


def batches(x, index_batches: Iterable, device: torch.device) -> Iterator[torch.Tensor]:
    """``x[index]`` on ``device`` for each index (a slice or integer indices) in ``index_batches``, in order."""
    cuda = torch.device(device).type == "cuda"
    if not isinstance(x, LazyImages):
        for index in index_batches:
            if isinstance(index, torch.Tensor):
                index = index.to(x.device)
            yield x[index].to(device, non_blocking=cuda)
        return
    plan = [x.positions[index.cpu().numpy() if isinstance(index, torch.Tensor) else index].tolist()
            for index in index_batches]
    parallel = x.decoder.parallel and sum(map(len, plan)) >= MIN_FOR_WORKERS
    loader = torch.utils.data.DataLoader(x.decoder, batch_sampler=plan, num_workers=WORKERS if parallel else 0,
                                         collate_fn=_as_batch, pin_memory=cuda)
    for xb in loader:
        yield xb.to(device, non_blocking=cuda)
