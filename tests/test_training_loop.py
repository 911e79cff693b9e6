"""The one training loop (prune.training.Trainer) that fit and dynamic runs share."""

import torch
from torch import nn

from prune.training import TrainConfig, fit


def test_epoch_loss_and_accuracy_are_over_the_examples_trained_on():
    # 129 examples in batches of 128 with BatchNorm: the last batch of one is left out, so the
    # epoch's mean is over 128 examples (it was divided by 129)
    torch.manual_seed(0)
    x, y = torch.randn(129, 4), torch.zeros(129, dtype=torch.int64)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    with torch.no_grad():  # a model that predicts class 0 for everything: accuracy must be exactly 1
        model[2].weight.zero_()
        model[2].bias.copy_(torch.tensor([10.0, -10.0]))
    history = fit(model, x, y, TrainConfig(epochs=1, lr=0.0), device=torch.device("cpu"), seed=0)
    assert history[0]["train_accuracy"] == 1.0


def test_weighted_and_unweighted_steps_agree_for_equal_weights():
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    runs = []
    for weights in (None, torch.full((64,), 2.5)):
        torch.manual_seed(1)
        model = nn.Linear(3, 2)
        fit(model, x, y, TrainConfig(epochs=2, batch_size=16), device=torch.device("cpu"), seed=3, weights=weights)
        runs.append(model.weight.detach().clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)
