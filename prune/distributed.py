"""Running under torchrun: the process group, each rank's shard of the rows, rank 0's results shared.

Outside torchrun (no ``WORLD_SIZE`` > 1) there is one process, rank 0 of a world of size 1, no
process group, and every helper here is the identity. Under torchrun ``start`` joins the group
torchrun describes in the environment (``MASTER_ADDR``, ``RANK``, ...) with the gloo backend:
what travels are CPU tensors (features, weights), also when the models run on CUDA.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from prune.errors import PruneError

#: how long a rank waits for the others at a collective before giving up (env PRUNE_DIST_TIMEOUT, seconds)
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes (``World()``: one process)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes outputs and prints."""
        return self.rank == 0

    def from_main(self, make):
        """``make()`` computed on rank 0 only, and its result (picklable) on every rank."""
        if self.size == 1:
            return make()
        box = [make() if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list | None:
        """Every rank's ``value`` (picklable), in rank order, on rank 0; None on the others."""
        if self.size == 1:
            return [value]
        out = [None] * self.size if self.main else None
        dist.gather_object(value, out, dst=0)
        return out


def current() -> World:
    """The world of the process group this process has joined, or ``World()`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched_rank() -> int:
    """This process's rank as torchrun numbered it (``RANK``; 0 outside torchrun), no process group needed."""
    return int(os.environ.get("RANK", "0"))


def start() -> World:
    """Join torchrun's process group when it started more than one process; ``World()`` otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    if not dist.is_available():
        raise PruneError("WORLD_SIZE > 1 but this torch has no torch.distributed; run prune in one process")
    try:
        timeout = float(os.environ.get("PRUNE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        raise PruneError("PRUNE_DIST_TIMEOUT must be a number of seconds, "
                         f"got {os.environ['PRUNE_DIST_TIMEOUT']!r}") from None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)  # --device cuda means this rank's GPU
    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
    return current()


def stop() -> None:
    """Wait until every rank is here (rank 0 done writing), then leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(n: int, batch_size: int, world: World) -> tuple[range, int]:
    """This rank's rows of ``n`` and the number of batches every rank steps through.

    The rows are cut in whole batches of ``batch_size`` (as one process would batch them, so each
    batch's features are computed from the same inputs), ``ceil(batches / size)`` to a rank in rank
    order: contiguous, fixed by ``n``, ``batch_size`` and ``size`` alone. The last ranks may get
    fewer rows, or none.
    """
    steps = math.ceil(math.ceil(n / batch_size) / world.size)
    first = min(world.rank * steps * batch_size, n)
    return range(first, min(first + steps * batch_size, n)), steps
