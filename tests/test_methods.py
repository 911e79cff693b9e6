"""Each method's distance against a direct float64 computation of its formula (methods.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prune.features.store import FeatureStore
from prune.selection.methods import FACILITY_LOCATION, MethodOptions
from prune.selection.methods.lcmat import top_variance_coordinates

N, M, C, E = 12, 3, 4, 5


def random_store(seed: int = 0, samples: int = M, n: int = N) -> FeatureStore:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, samples, C, generator=g) * 2
    p = logits.softmax(-1)
    labels = torch.arange(n) % C
    onehot = torch.nn.functional.one_hot(labels, C).float()[:, None]
    grad = p - onehot
    hess = p * (1 - p)
    point = {}
    if samples > 1:  # the unperturbed weights' features: one more draw
        q = (torch.randn(n, C, generator=g) * 2).softmax(-1)
        point = dict(grad_logit_point=q - onehot[:, 0], hess_logit_point=q * (1 - q),
                     embedding_point=torch.randn(n, E, generator=g).relu())
    return FeatureStore(
        path=Path("synthetic.h5"),
        meta={"num_classes": C, "dataset_source": "synthetic", "fingerprint": "x", "features": {}, "seed": 0},
        labels=labels,
        grad_logit=grad,
        hess_logit=hess,
        embedding=torch.randn(n, samples, E, generator=g).relu(),
        grad_logit_ema=grad[:, 0] * 0.9,
        hess_logit_ema=hess[:, 0] * 1.1,
        loss_per_epoch=torch.rand(n, 3, generator=g) * 0.3,
        noise_flipped=torch.empty(0, dtype=torch.int64),
        **point,
    )


def pairwise(fn, n=N):
    return np.array([[fn(i, j) for j in range(n)] for i in range(n)])


def method(name, store, **options):
    return FACILITY_LOCATION[name](store, MethodOptions(**options), torch.device("cpu"))


ROWS = torch.arange(N)


def test_craig_is_the_logit_gradient_distance_at_the_point_or_its_mean_over_samples():
    store = random_store()
    g, point = store.grad_logit.double().numpy(), store.grad_logit_point.double().numpy()
    at_point = pairwise(lambda i, j: np.linalg.norm(point[i] - point[j]))
    np.testing.assert_allclose(method("craig", store).distances(ROWS).numpy(), at_point, rtol=1e-6, atol=1e-6)
    mean = pairwise(lambda i, j: np.mean([np.linalg.norm(g[i, m] - g[j, m]) for m in range(M)]))
    np.testing.assert_allclose(method("craig", store, posterior="mean").distances(ROWS).numpy(), mean,
                               rtol=1e-6, atol=1e-6)
    assert method("craig", store).posterior == "point" and method("ensemble", store).posterior == "mean"


def test_posterior_choice_is_checked():
    from prune.errors import PruneError

    with pytest.raises(PruneError, match="--posterior mean needs posterior samples"):
        method("craig", random_store(samples=1), posterior="mean")
    with pytest.raises(PruneError, match="ensemble is craig with --posterior mean"):
        method("ensemble", random_store(), posterior="point")
    with pytest.raises(PruneError, match="unknown --posterior"):
        MethodOptions(posterior="median")
    old = random_store()
    old.grad_logit_point = old.hess_logit_point = old.embedding_point = None  # a store from before them
    with pytest.raises(PruneError, match="lacks the unperturbed weights' features.*re-create it"):
        method("craig", old)
    method("craig", old, posterior="mean")  # its samples are still usable


def test_ensemble_uses_mean_of_distances_not_distance_of_means():
    store = random_store()
    g = store.grad_logit.double().numpy()
    mean_of_distances = pairwise(lambda i, j: np.mean([np.linalg.norm(g[i, m] - g[j, m]) for m in range(M)]))
    distance_of_means = pairwise(lambda i, j: np.linalg.norm(g[i].mean(0) - g[j].mean(0)))
    got = method("ensemble", store).distances(ROWS).numpy()
    np.testing.assert_allclose(got, mean_of_distances, rtol=1e-6, atol=1e-6)
    assert np.abs(got - distance_of_means).max() > 1e-3  # the swap would be caught


def test_ensemble_refuses_a_store_without_posterior_samples():
    from prune.errors import PruneError

    with pytest.raises(PruneError, match="posterior-samples"):
        method("ensemble", random_store(samples=1))


def test_adacore_per_sample_hessian_preconditions_smoothed_gradients_with_damping():
    """hessian_batch=1: each example divided by its own H-bar (the per-sample variant)."""
    store = random_store(samples=1)
    store.hess_logit_ema[0, 0] = 0.0  # a dead unit: damping must keep it finite
    gbar, hbar = store.grad_logit_ema.double().numpy(), store.hess_logit_ema.double().numpy()
    eps = 1e-3 * hbar.mean()
    u = gbar / (hbar + eps)
    direct = pairwise(lambda i, j: np.linalg.norm(u[i] - u[j]))
    got = method("adacore", store, hessian_batch=1).distances(ROWS).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)


def test_adacore_posterior_averages_per_sample_preconditioned_gradients():
    store = random_store()
    g, a = store.grad_logit.double().numpy(), store.hess_logit.double().numpy()
    u = g / (a + 1e-3 * a.mean())
    direct = pairwise(lambda i, j: np.mean([np.linalg.norm(u[i, m] - u[j, m]) for m in range(M)]))
    got = method("adacore", store, hessian_batch=1, posterior="mean").distances(ROWS).numpy()
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)


def direct_batch_hessian(hess: np.ndarray, batch: int, seed: int) -> np.ndarray:
    """H-bar by a loop over the mini-batches of the seeded permutation (AdaCore §5.2)."""
    from prune.features.build import stream_seed
    from prune.selection.methods.adacore import HESSIAN_STREAM

    n = len(hess)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(seed, HESSIAN_STREAM))).numpy()
    out = np.empty_like(hess)
    for start in range(0, n, batch):
        members = perm[start:start + batch]
        out[members] = hess[members].mean(0)
    return out


@pytest.mark.parametrize("samples, batch", [(1, 5), (M, 5), (M, 4), (1, 100)])
def test_adacore_batch_averaged_hessian_matches_a_loop_over_batches(samples, batch):
    store = random_store(seed=3, samples=samples, n=23)  # 5 does not divide 23: a short last batch
    store.meta["seed"] = 7
    if samples == 1:
        g, a = store.grad_logit_ema.double().numpy()[:, None], store.hess_logit_ema.double().numpy()[:, None]
    else:
        g, a = store.grad_logit.double().numpy(), store.hess_logit.double().numpy()
    hbar = direct_batch_hessian(a, batch, seed=7)
    posterior = "point" if samples == 1 else "mean"
    adacore = method("adacore", store, hessian_batch=batch, posterior=posterior)
    np.testing.assert_allclose(adacore.hess.numpy(), hbar, rtol=1e-12)
    assert adacore.params()["hessian_batch"] == batch
    assert len({tuple(np.round(h.ravel(), 12)) for h in hbar}) == -(-23 // batch)  # one H-bar per batch
    u = g / (hbar + 1e-3 * hbar.mean())
    n = len(u)
    direct = pairwise(lambda i, j: np.mean([np.linalg.norm(u[i, m] - u[j, m]) for m in range(samples)]), n=n)
    np.testing.assert_allclose(adacore.distances(torch.arange(n)).numpy(), direct, rtol=1e-5, atol=1e-6)
    # the permutation depends on the store's seed
    store.meta["seed"] = 8
    assert not np.allclose(method("adacore", store, hessian_batch=batch, posterior=posterior).hess.numpy(), hbar) or batch >= 23


def test_adacore_batch_hessian_does_not_blow_up_confidently_mislabelled_examples():
    """Per-sample H makes u ~ -1/p_y: confident mistakes (p(1 - p) ~ 0) become extreme outliers."""
    n, bad = 128, torch.tensor([5, 40, 77])
    store = random_store(seed=1, samples=1, n=n)
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(n, C, generator=g)
    logits[bad] = 0.0
    wrong = (store.labels[bad] + 1) % C
    logits[bad, wrong] = 25.0  # p(wrong) ~ 1, p(label) ~ 0
    p = logits.softmax(-1)
    store.grad_logit_ema = p - torch.nn.functional.one_hot(store.labels, C).float()
    store.hess_logit_ema = p * (1 - p)
    assert torch.allclose(store.grad_logit_ema[bad].abs().sum(1), torch.full((3,), 2.0), atol=1e-6)
    good = torch.ones(n, dtype=torch.bool)
    good[bad] = False

    def norms(batch):
        u = method("adacore", store, hessian_batch=batch).preconditioned[:, 0].double().norm(dim=1)
        return u[bad], u[good].median()

    outliers, typical = norms(1)
    assert (outliers / typical).min() > 100  # per-sample: the mislabelled ones are far from everything
    outliers, typical = norms(64)
    assert (outliers / typical).max() < 5  # batch-averaged: within a small factor of the others


def materialised_lcmat(store, rho, top_k):
    """LCMat eq. 10 with G and lambda built whole, top-K by numpy variance over all (i, m)."""
    g, a = store.grad_logit.double().numpy(), store.hess_logit.double().numpy()
    h = np.concatenate([store.embedding.double().numpy(), np.ones((N, M, 1))], -1)
    G = np.einsum("nmc,nmj->nmcj", g, h).reshape(N, M, -1)
    lam = np.einsum("nmc,nmj->nmcj", a, h**2).reshape(N, M, -1)
    top = np.argsort(-lam.reshape(N * M, -1).var(0), kind="stable")[:top_k]
    return pairwise(lambda i, j: np.mean([
        np.linalg.norm(G[i, m] - G[j, m]) + rho / 2 * np.abs(lam[i, m, top] - lam[j, m, top]).sum()
        for m in range(M)])), top


def test_lcmat_matches_materialised_gradients_and_curvature():
    store = random_store()
    direct, top = materialised_lcmat(store, rho=0.5, top_k=7)
    lcmat = method("lcmat", store, rho=0.5, top_k=7, top_k_scope="all", posterior="mean")  # the paper's whole-set K
    assert sorted(lcmat.coordinates.tolist()) == sorted(top.tolist())
    np.testing.assert_allclose(lcmat.distances(ROWS).numpy(), direct, rtol=1e-6, atol=1e-6)


def test_top_variance_coordinates_by_class_scope_uses_class_rows_only():
    store = random_store()
    rows = torch.nonzero(store.labels == 1).flatten()
    a, h = store.hess_logit[rows].double().numpy(), store.embedding[rows].double().numpy()
    h = np.concatenate([h, np.ones((*h.shape[:2], 1))], -1)
    lam = np.einsum("nmc,nmj->nmcj", a, h**2).reshape(len(rows) * M, -1)
    expected = np.argsort(-lam.var(0), kind="stable")[:5]
    got = top_variance_coordinates(store.hess_logit[rows], store.embedding[rows], 5)
    assert sorted(got.tolist()) == sorted(expected.tolist())


def test_crest_drops_learned_examples_and_splits_into_subsets():
    store = random_store(n=40)
    store.loss_per_epoch[:] = 1.0
    store.loss_per_epoch[:10] = 0.01  # learned: below alpha at every checkpoint
    crest = method("crest", store, subset_size=7, learned_loss=0.1, learned_window=2)
    rows = torch.arange(40)
    pools = crest.pools(rows, 9, torch.Generator().manual_seed(0))
    used = torch.cat([p for p, _ in pools])
    assert not (used < 10).any() and len(used) == 30
    assert all(len(p) <= 7 for p, _ in pools) and sum(k for _, k in pools) == 9
    # too few unlearned examples: the highest-loss learned ones come back
    pools = crest.pools(rows, 35, torch.Generator().manual_seed(0))
    assert len(torch.cat([p for p, _ in pools])) == 35


def test_crest_keeps_learned_examples_by_default():
    """A static subset is trained from scratch: by default nothing is dropped as learned."""
    store = random_store(n=40)
    store.loss_per_epoch[:10] = 0.01  # would be learned under alpha 0.1
    crest = method("crest", store, subset_size=7)
    assert MethodOptions().learned_window == 0 and crest.params()["learned_window"] == 0
    pools = crest.pools(torch.arange(40), 9, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([p for p, _ in pools]).tolist()) == list(range(40)) and crest.dropped == 0


def test_lcmat_chooses_top_k_per_class_by_default():
    """The authors' code's scope (docs/results.md: not worse than the whole set at any rho on digits)."""
    store = random_store(n=40)
    lcmat = method("lcmat", store, top_k=5)
    assert lcmat.params()["top_k_scope"] == "class"
    rows = torch.nonzero(store.labels == 1).flatten()
    lcmat.select_class(rows, 2, torch.Generator().manual_seed(0))
    expected = top_variance_coordinates(store.hess_logit_point[rows, None], store.embedding_point[rows, None], 5)
    assert lcmat.coordinates.tolist() == expected.tolist()


def test_crest_says_how_many_it_dropped_as_learned_per_class(capsys):
    """The learned drop is printed and recorded per class (``prune inspect`` shows it)."""
    from prune.selection import Candidates, DifficultyOptions, select

    store = random_store(n=40)
    store.loss_per_epoch[:] = 1.0
    store.loss_per_epoch[:10] = 0.01  # learned: 3, 3, 2, 2 of classes 0..3
    candidates = Candidates(store.labels, {"num_classes": C, "source": "synthetic"}, store=store)
    manifest = select(candidates, "crest", fraction=0.2, options=MethodOptions(subset_size=7, learned_window=2),
                      difficulty=DifficultyOptions(drop_hard=0))
    assert manifest.selection["dropped_learned"] == [3, 3, 2, 2]
    assert "crest: dropped 10 examples as learned" in " ".join(capsys.readouterr().err.split())


def test_the_pool_limit_note_is_printed_only_where_max_pool_split_a_class(capsys):
    """crest forms pools of --subset-size, so --max-pool's note never applies to it."""
    from prune.selection import Candidates, DifficultyOptions, select

    store = random_store(n=40)
    candidates = Candidates(store.labels, {"num_classes": C, "source": "synthetic"}, store=store)
    stage = DifficultyOptions(drop_hard=0)
    crest = select(candidates, "crest", fraction=0.5, options=MethodOptions(subset_size=4), difficulty=stage)
    assert crest.selection["pools"] == 12 and "pool" not in capsys.readouterr().err
    craig = select(candidates, "craig", fraction=0.5, options=MethodOptions(max_pool=4), difficulty=stage)
    assert craig.selection["pools"] == 12
    assert "4 pools larger than --max-pool 4 were split at random: 12 greedy runs" in " ".join(capsys.readouterr().err.split())
    select(candidates, "craig", fraction=0.5, difficulty=DifficultyOptions(drop_hard="auto"))  # no split: no note
    assert "pool" not in capsys.readouterr().err


def test_greedy_shows_its_runs_done_of_planned_on_a_terminal(terminal):
    from prune.selection import Candidates, DifficultyOptions, select
    from prune.training import quiet

    store = random_store(n=40)
    candidates = Candidates(store.labels, {"num_classes": C, "source": "synthetic"}, store=store)
    stage = DifficultyOptions(drop_hard=0)
    select(candidates, "craig", fraction=0.5, options=MethodOptions(max_pool=4), difficulty=stage)
    assert "greedy craig" in terminal.getvalue() and "12/12" in terminal.getvalue()
    terminal.seek(0), terminal.truncate()
    with quiet():
        select(candidates, "craig", fraction=0.5, options=MethodOptions(max_pool=4), difficulty=stage)
    assert "greedy" not in terminal.getvalue()
