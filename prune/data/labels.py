"""Labels: the fingerprint that identifies them, and label noise.

Labels are identified by ``label_fingerprint``: the same labels in the same order give the same
fingerprint whatever loaded them (IDX files, an npz, a Hugging Face copy), so manifests and
stores can check that they are used on the data they were made from.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from prune.errors import PruneError

_FINGERPRINT_PREFIX = b"prune.labels/1\n"


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


def unused_labels(present: np.ndarray, num_classes: int, shown: int = 5) -> str:
    """The first ``shown`` of 0..num_classes-1 missing from ``present`` (the sorted labels in use), for a message.

    Looks only at the first ``len(present) + shown`` candidates, so a corrupted label of 10^9 costs nothing.
    """
    gaps = np.setdiff1d(np.arange(min(num_classes, len(present) + shown)), present)[:shown]
    more = num_classes - len(present) > len(gaps)
    return ", ".join(map(str, gaps.tolist())) + (", ..." if more else "")


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
