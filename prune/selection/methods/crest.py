"""CREST (static form): mini-batch coresets from random subsets (CREST eq. 11, §4.3).

Within each class: split the examples into random subsets of ``subset_size`` (r), select from
each by facility location on logit gradients with budgets proportional to subset size, and take
the union.

Dropping *learned* examples is optional and off by default (``learned_window`` T2 = 0). CREST
§4.3 drops an example whose loss stayed below alpha (``learned_loss``) for T2 steps *during*
training, because the model that is being trained has learned it and its gradient no longer
matters to that model. A static subset is instead trained on by a fresh model from scratch, for
which those examples are not learned yet; on Fashion-MNIST the rule (alpha 0.1, T2 2 warm-up
checkpoints) would drop 67 % of the data before selection. With ``learned_window`` >= 1 the rule
is applied to the warm-up model: an example is dropped when its loss is below alpha at each of the
last T2 (capped at the checkpoints stored) warm-up checkpoints; if dropping would leave fewer
examples than the class budget, the learned examples with the highest last loss are kept back in.
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
            raise PruneError("--subset-size must be >= 1", parameters=True)
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
