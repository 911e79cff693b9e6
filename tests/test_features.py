"""Closed-form per-sample features against autograd, Hutchinson, EMA and posterior sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev, vmap

from prune.errors import PruneError
from prune.features.averaging import CheckpointAverage, ema
from prune.features.closed_form import last_layer_grad, last_layer_hess_diag, logit_quantities, with_bias
from prune.features.config import PosteriorConfig
from prune.features.extract import FEATURE_KEYS, Hutchinson, extract_batches, extract_features
from prune.features.hutchinson import hutchinson_hess_logit, hutchinson_param_hess_diag
from prune.features.posterior import hessian_noise_scale, perturbed, posterior_parameters

D_IN, HIDDEN, EMB, C = 6, 12, 8, 5
DT = torch.float64


class MLP(nn.Module):
    """Tiny classifier with the prune model interface (embed + fc), optionally with BatchNorm."""

    def __init__(self, batchnorm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(D_IN, HIDDEN)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(HIDDEN))
        layers += [nn.Tanh(), nn.Linear(HIDDEN, EMB)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(EMB))
        layers.append(nn.Tanh())
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(EMB, C)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: thread start-up dominates on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_model(batchnorm: bool, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    model = MLP(batchnorm).to(DT)
    with torch.no_grad():
        model.fc.weight.mul_(4.0)  # spread the softmax away from uniform
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                # non-trivial running statistics and affine parameters
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.eval()
    return model


def make_data(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g, dtype=DT)
    y = torch.randint(0, C, (n,), generator=g)
    return x, y


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def per_sample_ce(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[None], label[None])


# ---------------------------------------------------------------- closed forms vs autograd


@pytest.mark.parametrize("batchnorm", [False, True])
def test_logit_quantities_match_autograd(batchnorm: bool) -> None:
    model = make_model(batchnorm)
    x, y = make_data(40)
    with torch.no_grad():
        logits = model(x)
    g, a, loss = logit_quantities(logits, y)

    g_ref = vmap(jacrev(per_sample_ce))(logits, y)
    h_ref = vmap(hessian(per_sample_ce))(logits, y)
    loss_ref = F.cross_entropy(logits, y, reduction="none")

    assert g.shape == (40, C) and a.shape == (40, C) and loss.shape == (40,)
    assert rel_err(g, g_ref) < 1e-5
    assert rel_err(a, torch.diagonal(h_ref, dim1=1, dim2=2)) < 1e-5
    assert rel_err(loss, loss_ref) < 1e-5
    # the full logit Hessian is diag(p) - p p^T
    p = logits.softmax(1)
    assert rel_err(torch.diag_embed(p) - p[:, :, None] * p[:, None, :], h_ref) < 1e-5


@pytest.mark.parametrize("batchnorm", [False, True])
def test_last_layer_grad_and_hessian_match_autograd(batchnorm: bool) -> None:
    """G and lambda against torch.func through the whole model, w.r.t. fc weight+bias."""
    model = make_model(batchnorm)
    x, y = make_data(30)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_of_fc(theta: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        # theta is the (c, j) row-major flattening, j = EMB the bias
        t = theta.reshape(C, EMB + 1)
        p = dict(params)
        p["fc.weight"], p["fc.bias"] = t[:, :EMB], t[:, EMB]
        out = functional_call(model, p, (xi[None],))
        return F.cross_entropy(out, yi[None])

    theta = torch.cat([model.fc.weight, model.fc.bias[:, None]], dim=1).detach().reshape(-1)
    grad_ref = vmap(jacrev(loss_of_fc), in_dims=(None, 0, 0))(theta, x, y)
    hess_ref = vmap(hessian(loss_of_fc), in_dims=(None, 0, 0))(theta, x, y)

    with torch.no_grad():
        h = model.embed(x)
        g, a, _ = logit_quantities(model.fc(h), y)
    G = last_layer_grad(g, h)
    lam = last_layer_hess_diag(a, h)
    assert G.shape == (30, C * (EMB + 1)) and lam.shape == G.shape
    assert rel_err(G, grad_ref) < 1e-5
    assert rel_err(lam, torch.diagonal(hess_ref, dim1=1, dim2=2)) < 1e-5


def test_gram_factorisation() -> None:
    """<G_i, G_j> = <g_i, g_j> <h~_i, h~_j> (why selection never materialises G)."""
    model = make_model(False)
    x, y = make_data(20)
    with torch.no_grad():
        h = model.embed(x)
        g, _, _ = logit_quantities(model.fc(h), y)
    G = last_layer_grad(g, h)
    ht = with_bias(h)
    assert rel_err((g @ g.T) * (ht @ ht.T), G @ G.T) < 1e-12


def test_bad_shapes_raise() -> None:
    with pytest.raises(PruneError):
        logit_quantities(torch.zeros(3, 4), torch.zeros(4, dtype=torch.long))


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize("batchnorm", [False, True])
def test_extract_batches_is_batch_size_invariant(batchnorm: bool) -> None:
    model = make_model(batchnorm)
    model.train()  # extraction must switch to eval and restore this afterwards
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = make_data(50)  # 50 = 7 * 7 + 1: a short last batch
    small = extract_features(model, x, y, batch_size=7, device="cpu", out_dtype=DT)
    large = extract_features(model, x, y, batch_size=64, device="cpu", out_dtype=DT)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():  # BN running statistics untouched
        assert torch.equal(v, buffers[k]), k

    assert set(small) == set(FEATURE_KEYS)
    for k in FEATURE_KEYS:
        assert small[k].shape == large[k].shape
        torch.testing.assert_close(small[k], large[k], rtol=1e-10, atol=1e-12)

    model.eval()
    with torch.no_grad():
        h = model.embed(x)
        logits = model(x)
    g, a, loss = logit_quantities(logits, y)
    torch.testing.assert_close(small["embedding"], h)
    torch.testing.assert_close(small["logits"], logits)
    torch.testing.assert_close(small["grad_logit"], g)
    torch.testing.assert_close(small["hess_logit"], a)
    torch.testing.assert_close(small["loss"], loss)


def test_extract_batches_defaults_to_cpu_float32_and_order() -> None:
    model = make_model(True)
    x, y = make_data(23)
    batches = list(extract_batches(model, x, y, batch_size=10, device=torch.device("cpu")))
    assert [b["loss"].shape[0] for b in batches] == [10, 10, 3]
    for b in batches:
        assert set(b) == set(FEATURE_KEYS)
        for v in b.values():
            assert v.dtype == torch.float32 and v.device.type == "cpu"
    with torch.no_grad():
        ref = F.cross_entropy(model(x), y, reduction="none").float()
    torch.testing.assert_close(torch.cat([b["loss"] for b in batches]), ref)


def test_extract_batches_hutchinson_option() -> None:
    model = make_model(False)
    x, y = make_data(30)
    gen = torch.Generator().manual_seed(3)
    est = extract_features(model, x, y, batch_size=16, device="cpu", hutchinson=Hutchinson(400, gen), out_dtype=DT)
    exact = extract_features(model, x, y, batch_size=16, device="cpu", out_dtype=DT)
    assert rel_err(est["hess_logit"], exact["hess_logit"]) < 0.2
    torch.testing.assert_close(est["grad_logit"], exact["grad_logit"])
    with pytest.raises(PruneError, match="unknown hessian 'nope'"):
        PosteriorConfig(hessian="nope")  # the one place the choice is checked


# ---------------------------------------------------------------- Hutchinson


def test_hutchinson_logit_converges() -> None:
    g = torch.Generator().manual_seed(0)
    logits = 2.0 * torch.randn(200, 10, generator=g, dtype=DT)
    y = torch.randint(0, 10, (200,), generator=g)
    _, exact, _ = logit_quantities(logits, y)
    errs = {}
    for s in (10, 2000):
        est = hutchinson_hess_logit(logits, y, s, torch.Generator().manual_seed(1))
        assert est.shape == exact.shape and not est.requires_grad
        errs[s] = rel_err(est, exact)
    # error ~ 1/sqrt(S): sqrt(2000 / 10) ~ 14
    assert errs[2000] < errs[10] / 6, errs
    assert errs[2000] < 0.05, errs
    # same seed, same estimate; works under no_grad
    with torch.no_grad():
        again = hutchinson_hess_logit(logits, y, 2000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, est, rtol=0, atol=0)


def test_hutchinson_param_hessian_matches_last_layer_closed_form() -> None:
    """For the fc group, the Hessian diagonal of the mean loss is mean_i lambda_i."""
    model = make_model(True)
    x, y = make_data(64)
    params, name = posterior_parameters(model, "fc")
    assert name == "fc"
    gen = torch.Generator().manual_seed(5)
    est = hutchinson_param_hess_diag(model, params, [(x[:32], y[:32]), (x[32:], y[32:])], 300, gen)
    with torch.no_grad():
        h = model.embed(x)
        _, a, _ = logit_quantities(model.fc(h), y)
    lam = last_layer_hess_diag(a, h).mean(0).reshape(C, EMB + 1)
    est_flat = torch.cat([est[0], est[1][:, None]], dim=1)
    assert est[0].shape == model.fc.weight.shape and est[1].shape == model.fc.bias.shape
    assert rel_err(est_flat, lam) < 0.15
    assert all(p.requires_grad for p in model.parameters())


def test_hessian_noise_scale_formula_and_clipping() -> None:
    model = make_model(True)
    x, y = make_data(32)
    params, name = posterior_parameters(model, "bn")
    assert name == "bn"
    sigma = 0.01
    batches = [(x, y)]
    stds = hessian_noise_scale(model, params, batches, sigma, 20, torch.Generator().manual_seed(2))
    h = hutchinson_param_hess_diag(model, params, batches, 20, torch.Generator().manual_seed(2))
    habs = [t.abs() for t in h]
    mean = torch.cat([t.reshape(-1) for t in habs]).mean()
    for std, p, ha in zip(stds, params, habs):
        assert std.shape == p.shape
        assert float(std.min()) >= 0.1 * sigma * (1 - 1e-12)
        assert float(std.max()) <= 10 * sigma * (1 + 1e-12)
        ref = (sigma * torch.sqrt(mean / ha)).clamp(0.1 * sigma, 10 * sigma)
        torch.testing.assert_close(std, ref)


# ---------------------------------------------------------------- posterior sampling


def test_posterior_parameters_groups_and_fallback() -> None:
    bn_model = make_model(True)
    params, name = posterior_parameters(bn_model, "bn")
    bns = [m for m in bn_model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert name == "bn" and len(params) == 2 * len(bns)
    ids = {id(p) for p in params}
    assert all(id(m.weight) in ids and id(m.bias) in ids for m in bns)

    plain = make_model(False)
    params, name = posterior_parameters(plain, "bn")
    assert name == "fc"
    assert [id(p) for p in params] == [id(plain.fc.weight), id(plain.fc.bias)]

    params, name = posterior_parameters(plain, "all")
    assert name == "all" and len(params) == len(list(plain.parameters()))
    with pytest.raises(PruneError):
        posterior_parameters(plain, "conv")


@pytest.mark.parametrize("layers", ["bn", "fc", "all"])
def test_perturbed_restores_exactly_and_is_reproducible(layers: str) -> None:
    model = make_model(True)
    x, _ = make_data(10)
    params, _ = posterior_parameters(model, layers)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out0 = model(x)

    with perturbed(model, params, 0.1, torch.Generator().manual_seed(7)) as deltas1:
        with torch.no_grad():
            out1 = model(x)
        inside = [p.detach().clone() for p in params]
    assert not torch.allclose(out0, out1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # bit-exact restore

    with perturbed(model, params, 0.1, torch.Generator().manual_seed(7)) as deltas2:
        inside2 = [p.detach().clone() for p in params]
    for d1, d2, a, b in zip(deltas1, deltas2, inside, inside2):
        assert torch.equal(d1, d2) and torch.equal(a, b)
    # the noise has the requested scale
    flat = torch.cat([d.reshape(-1) for d in deltas1])
    assert 0.05 < float(flat.std()) < 0.2

    with pytest.raises(RuntimeError, match="boom"):
        with perturbed(model, params, 0.1, torch.Generator().manual_seed(8)):
            raise RuntimeError("boom")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_perturbed_elementwise_std() -> None:
    model = make_model(False)
    params, _ = posterior_parameters(model, "fc")
    stds = [torch.zeros_like(p) for p in params]
    stds[0][0] = 1.0  # only the first row of the weight moves
    before = [p.detach().clone() for p in params]
    with perturbed(model, params, stds, torch.Generator().manual_seed(0)):
        assert not torch.equal(params[0][0], before[0][0])
        assert torch.equal(params[0][1:], before[0][1:])
        assert torch.equal(params[1], before[1])
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    with pytest.raises(PruneError):
        with perturbed(model, params, stds[:1], torch.Generator()):
            pass


# ---------------------------------------------------------------- exponential averaging


def test_checkpoint_average_matches_formula() -> None:
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(7, C, generator=g, dtype=DT) for _ in range(5)]
    hesss = [torch.rand(7, C, generator=g, dtype=DT) for _ in range(5)]
    b1, b2 = 0.9, 0.999
    avg = CheckpointAverage(b1, b2)
    for t, (gr, he) in enumerate(zip(grads, hesss), start=1):
        avg.update(gr, he)
        T = t
        g_ref = (1 - b1) * sum(b1 ** (T - s) * grads[s - 1] for s in range(1, T + 1)) / (1 - b1**T)
        h_ref = torch.sqrt(
            (1 - b2) * sum(b2 ** (T - s) * hesss[s - 1] ** 2 for s in range(1, T + 1)) / (1 - b2**T)
        )
        torch.testing.assert_close(avg.grad, g_ref, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(avg.hess, h_ref, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(ema(grads[:T], b1), g_ref, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(ema(hesss[:T], b2, square=True), h_ref, rtol=1e-12, atol=1e-14)
    assert avg.count == 5


def test_checkpoint_average_single_checkpoint_is_identity() -> None:
    g = torch.Generator().manual_seed(1)
    grad = torch.randn(11, C, generator=g)
    hess = torch.rand(11, C, generator=g)
    hess[0, 0] = 1e-30  # h^2 underflows in float32; must still come back exactly
    hess[0, 1] = 0.0
    avg = CheckpointAverage()
    avg.update(grad, hess)
    assert avg.grad.dtype == torch.float32 and avg.hess.dtype == torch.float32
    assert torch.equal(avg.grad, grad)
    assert torch.equal(avg.hess, hess)
    assert torch.equal(ema([grad]), grad) and torch.equal(ema([hess], 0.999, square=True), hess)


def test_checkpoint_average_errors() -> None:
    avg = CheckpointAverage()
    with pytest.raises(PruneError):
        _ = avg.grad
    avg.update(torch.zeros(3, 2))
    with pytest.raises(PruneError):
        _ = avg.hess
    with pytest.raises(PruneError):
        avg.update(torch.zeros(4, 2))
    with pytest.raises(PruneError):
        CheckpointAverage(beta1=1.0)
    assert math.isclose(CheckpointAverage().beta2, 0.999)
