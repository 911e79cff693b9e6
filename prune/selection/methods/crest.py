"""CREST (static form): mini-batch coresets from random subsets (CREST eq. 11, §4.3).

Within each class: drop *learned* examples -- loss below ``learned_loss`` (alpha) at each of
the last ``learned_window`` (T2, capped at the checkpoints stored) warm-up checkpoints; 0 turns
dropping off -- then split the
rest into random subsets of ``subset_size`` (r), select from each by facility location on
logit gradients with budgets proportional to subset size, and take the union. If dropping
would leave fewer examples than the class budget, the learned examples with the highest last
loss are kept back in.
"""

from __future__ import annotations

import torch

from prune.errors import PruneError
from prune.selection.budget import largest_remainder
from prune.selection.engine import split_pool
from prune.selection.methods.craig import Craig


class Crest(Craig):
    name = "crest"

    def __init__(self, store, options, device):
        super().__init__(store, options, device)
        if options.subset_size < 1:
            raise PruneError("--subset-size must be >= 1")
        self.window = window = min(options.learned_window, store.loss_per_epoch.shape[1])
        recent = store.loss_per_epoch[:, store.loss_per_epoch.shape[1] - window:]
        self.learned = (recent < options.learned_loss).all(1) if window > 0 else torch.zeros(store.num_examples, dtype=torch.bool)
        self.dropped = 0

    def params(self):
        return {"subset_size": self.options.subset_size, "learned_loss": self.options.learned_loss,
                "learned_window": self.window}

    def pools(self, rows, k, generator):
        keep = rows[~self.learned[rows]]
        if len(keep) < k:
            learned = rows[self.learned[rows]]
            last_loss = self.store.loss_per_epoch[learned, -1]
            back = learned[torch.argsort(last_loss, descending=True, stable=True)[: k - len(keep)]]
            keep = torch.sort(torch.cat([keep, back])).values
        self.dropped += len(rows) - len(keep)
        parts = split_pool(keep, self.options.subset_size, generator)
        return list(zip(parts, largest_remainder([len(p) for p in parts], k)))
