"""Every random stream prune draws from, by name, and the one function that makes its generator.

A stream is a path of integers under the run's ``--seed``; ``numpy.random.SeedSequence`` turns
``[seed, *path, *index]`` into an independent 32-bit seed, so two streams never share draws and
adding a stream changes no other. The two streams with an empty path (the training shuffle and
the selection draws) are seeded with ``seed`` itself.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS: dict[str, tuple[int, ...]] = {
    "shuffle": (),            # prune.training: the batch order of every epoch
    "selection": (),          # prune.selection: pool splits and uniform picks, class by class
    "feature_pass": (1,),     # features: Hutchinson probes of pass m (index m; the unperturbed pass 0)
    "checkpoint_pass": (2,),  # features: Hutchinson probes of the warm-up checkpoint pass (index epoch)
    "seed_member": (3,),      # features, --posterior-kind seeds: the warm-up seed of member m
    "perturbation": (4,),     # features: delta_m of posterior sample m
    "curvature": (5,),        # features, --posterior-kind hessian: probes and the rows they are measured on
    "augment": (6,),          # prune.training: random crops and flips
    "hessian_batches": (7,),  # adacore: the mini-batches H-bar is averaged over (b_H)
    "dynamic_subsets": (30,),  # dynamic: the random subsets V_p (index 1: class-balanced picks)
    "dynamic_perturbation": (31,),  # dynamic ensemble: delta_m at selection point t (index t, m)
    "dynamic_order": (32,),   # dynamic: the order coresets are trained in
    "dynamic_part": (33,),    # dynamic: the random part of a coreset a short step trains on
    "dynamic_loss_sample": (34,),  # dynamic crest rule: the sample V_r its loss is measured on
}


def stream_seed(seed: int, stream: str, *index: int) -> int:
    """The seed of ``stream`` (a name in ``STREAMS``) under ``seed``, at ``index`` (a pass, an epoch, ...)."""
    path = (*STREAMS[stream], *index)
    if not path:
        return int(seed)
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


def generator(seed: int, stream: str, *index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``stream`` under ``seed`` (``stream_seed``)."""
    return torch.Generator().manual_seed(stream_seed(seed, stream, *index))
