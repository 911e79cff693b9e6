"""Training-time augmentation (``--augment``), applied by ``prune.training.fit`` to each training batch.

``standard`` is the CIFAR protocol of the seed papers: pad by an eighth of the image side
(4 pixels at 32 x 32) with zeros -- the training mean, as inputs are normalised -- take a random
crop of the original size, and flip it horizontally with probability 1/2; every example of a
batch draws its own crop and flip from a seeded CPU generator, so runs are reproducible on any
device. ``none`` trains on the inputs as they are. Features are never augmented: extraction
does not go through ``fit``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "standard")


def standard(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random padded crop and horizontal flip of each image in ``x`` (B x C x H x W)."""
    b, c, h, w = x.shape
    pad = max(1, round(min(h, w) / 8))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)  # b x h: the rows of the padded image each crop takes
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    rows, cols = rows.to(x.device), cols.to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
