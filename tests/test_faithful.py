"""Checks a reader of the papers would expect: formulas against independent computations.

* the warm-up learning-rate schedule (cosine, or constant as DeepCore/LCMat warm up);
* CREST's quadratic model rho (eq. 6, 10) against autograd;
* ``build_store`` with M posterior samples: distinct samples, averages equal a recomputation;
  ``--posterior point`` on it equals an M = 1 store, ``mean`` equals ensemble.

AdaCore's batch-averaged expected Hessian (§5.2) is checked against a loop over the
permutation's mini-batches in tests/test_methods.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from prune.dynamic.quadratic import Quadratic
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


# ----------------------------------------------------------------------------- CREST's quadratic model


def _small_digits(n: int):
    from prune.data import load_dataset, take

    data = load_dataset("digits")
    return dataclasses.replace(data, train=take(data.train, range(n)))


def test_crest_quadratic_model_rho_matches_autograd():
    """rho = |F(delta) - L_r(w + delta)| / L_r(w + delta), F(delta) = L_r(w) + g_S . delta +
    1/2 delta^T diag(H_S) delta, g_S and diag(H_S) the gradient and Hessian diagonal of the
    gamma-weighted coreset loss w.r.t. the last layer [W, b] (CREST eq. 6, 10), by autograd."""
    from prune.models import build_model

    data = _small_digits(300)
    x, labels = data.train.x, data.train.y
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_classes).eval()
    g = torch.Generator().manual_seed(1)
    union = torch.randperm(300, generator=g)[:40]
    weights = torch.rand(40, generator=g, dtype=torch.float64) * 5 + 1
    sample = torch.randperm(300, generator=g)[:100]
    device = torch.device("cpu")
    quadratic = Quadratic(model, x, labels, union, weights, sample, 64, device)

    # independent: float64 copy of the last layer, loss as a function of theta = [W, b]
    with torch.no_grad():
        h_union, h_sample = model.embed(x[union]).double(), model.embed(x[sample]).double()
    w0 = torch.cat([model.fc.weight, model.fc.bias[:, None]], 1).detach().double()

    def coreset_loss(theta):
        logits = h_union @ theta[:, :-1].T + theta[:, -1]
        losses = nn.functional.cross_entropy(logits, labels[union], reduction="none")
        return (weights * losses).sum() / weights.sum()

    def sample_loss(theta):
        return nn.functional.cross_entropy(h_sample @ theta[:, :-1].T + theta[:, -1], labels[sample])

    grad = torch.func.grad(coreset_loss)(w0)
    hess_diag = torch.func.hessian(coreset_loss)(w0).reshape(w0.numel(), w0.numel()).diagonal().reshape(w0.shape)
    torch.testing.assert_close(quadratic.grad, grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(quadratic.hess, hess_diag, rtol=1e-5, atol=1e-8)

    delta = torch.randn(w0.shape, generator=g, dtype=torch.float64) * 0.4
    with torch.no_grad():  # only the last layer moves
        model.fc.weight += delta[:, :-1].float()
        model.fc.bias += delta[:, -1].float()
    delta = torch.cat([model.fc.weight, model.fc.bias[:, None]], 1).detach().double() - w0  # as stored
    model_value = sample_loss(w0) + (grad * delta).sum() + 0.5 * (hess_diag * delta * delta).sum()
    actual = sample_loss(w0 + delta)
    expected = float((model_value - actual).abs() / actual)
    rho, _ = quadratic.rho(model, x, labels, 64, device)
    assert 0.01 < expected < 0.5  # an ordinary rho, of the size of CREST's tau (0.05), not 0
    assert rho == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- build_store


def test_build_store_writes_distinct_posterior_samples_and_averages_equal_a_recomputation(tmp_path):
    from prune import random_streams
    from prune.features import FeatureConfig, FeatureStore, PosteriorConfig, build_store, extract_features
    from prune.features.build import warm_start
    from prune.features.posterior import perturbed, posterior_parameters

    data = _small_digits(240)
    labels = data.train.y
    config = FeatureConfig(model="mlp", warmup=TrainConfig(epochs=1, batch_size=32), batch_size=100,
                           posterior=PosteriorConfig(samples=3, sigma=0.05, layers="fc"))
    device = torch.device("cpu")
    store = FeatureStore.open(build_store(data, labels, tmp_path / "s.h5", config, seed=5, device=device))
    assert store.grad_logit.shape == (240, 3, 10)
    for a in range(3):
        for b in range(a + 1, 3):
            assert (store.grad_logit[:, a] - store.grad_logit[:, b]).abs().max() > 1e-4  # distinct samples
            assert (store.embedding[:, a] == store.embedding[:, b]).all()  # only fc is perturbed

    # with one warm-up epoch the averages are the features of the warm model, unperturbed
    model = warm_start(data, labels, config, seed=5, device=device)
    direct = extract_features(model, data.train.x, labels, batch_size=64, device=device)
    torch.testing.assert_close(store.grad_logit_ema[:], direct["grad_logit"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(store.hess_logit_ema[:], direct["hess_logit"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(store.loss_per_epoch[:, 0], direct["loss"], rtol=1e-5, atol=1e-6)
    # and every sample m is that model under the perturbation drawn from stream (seed, 4, m)
    params, used = posterior_parameters(model, "fc")
    for m in range(3):
        with perturbed(model, params, 0.05, random_streams.generator(5, "perturbation", m)):
            member = extract_features(model, data.train.x, labels, batch_size=64, device=device)
        for name in ("grad_logit", "hess_logit", "embedding"):
            torch.testing.assert_close(getattr(store, name)[:, m], member[name], rtol=1e-5, atol=1e-6)


def test_posterior_point_equals_an_m1_store_and_mean_equals_ensemble(tmp_path):
    """One warm-up, two stores: M = 1 and M = 3. From the M = 3 store, craig with --posterior point
    picks what craig picks from the M = 1 store, bit for bit, and --posterior mean what ensemble picks."""
    from prune.features import FeatureConfig, FeatureStore, PosteriorConfig, build_store, warm_up
    from prune.selection import Budget, Candidates, DifficultyConfig, MethodConfig, select

    data = _small_digits(240)
    labels, device = data.train.y, torch.device("cpu")
    configs = {m: FeatureConfig(model="mlp", warmup=TrainConfig(epochs=2, batch_size=32),
                                posterior=PosteriorConfig(samples=m, sigma=0.05, layers="fc")) for m in (1, 3)}
    warm = warm_up(data, labels, configs[1], seed=5, device=device)
    stores = {m: FeatureStore.open(build_store(data, labels, tmp_path / f"M{m}.h5", config, seed=5, device=device,
                                               warm=warm)) for m, config in configs.items()}
    assert torch.equal(stores[3].grad_logit_point[:], stores[1].grad_logit[:, 0])  # the same forward pass

    def craig(m, method="craig", posterior=None):
        # no difficulty stage: it scores from the posterior samples whatever --posterior says
        manifest = select(Candidates.from_store(stores[m]), MethodConfig(method, posterior=posterior), Budget(0.2), seed=1,
                          difficulty=DifficultyConfig(drop_hard=0))
        return manifest.indices.tolist(), manifest.weights.tobytes(), manifest.method["params"]["posterior"]

    assert craig(3) == craig(1) == craig(3, posterior="point")
    assert craig(3, posterior="mean") == craig(3, "ensemble")
    assert craig(3, posterior="mean")[0] != craig(3)[0]  # averaging over the samples changes the picks
