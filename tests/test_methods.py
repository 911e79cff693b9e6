"""Each method's distance against a direct float64 computation of its formula (methods.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prune.features.store import FeatureStore
from prune.selection.matching import gaussian_kernel_, kernel_herding
from prune.selection.methods import MethodConfig, method_class
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
        prob_label_per_epoch=torch.rand(n, 3, generator=g),
        margin_per_epoch=torch.randn(n, 3, generator=g) * 2,
        correct_per_epoch=(torch.rand(n, 3, generator=g) < 0.7).to(torch.uint8),
        noise_flipped=torch.empty(0, dtype=torch.int64),
        **point,
    )


def pairwise(fn, n=N):
    return np.array([[fn(i, j) for j in range(n)] for i in range(n)])


def method(name, store, **options):
    return method_class(name)(store, MethodConfig(name, **options), torch.device("cpu"))


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
    with pytest.raises(PruneError, match="unknown posterior 'median'"):
        MethodConfig(posterior="median")


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


def test_adacore_without_damping_refuses_a_dead_unit_when_its_pool_is_read():
    from prune.errors import PruneError

    store = random_store(samples=1)
    store.hess_logit_ema[3] = 0.0  # every unit of example 3 dead: 0 / 0 without damping
    adacore = method("adacore", store, hessian_batch=1, damping=0.0)
    assert torch.isfinite(adacore.distances(torch.tensor([0, 1, 2]))).all()
    with pytest.raises(PruneError, match="not finite; increase damping"):
        adacore.distances(torch.tensor([2, 3]))


def test_adacore_posterior_averages_per_sample_preconditioned_gradients():
    store = random_store()
    g, a = store.grad_logit.double().numpy(), store.hess_logit.double().numpy()
    u = g / (a + 1e-3 * a.mean())
    direct = pairwise(lambda i, j: np.mean([np.linalg.norm(u[i, m] - u[j, m]) for m in range(M)]))
    got = method("adacore", store, hessian_batch=1, posterior="mean").distances(ROWS).numpy()
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)


def direct_batch_hessian(hess: np.ndarray, batch: int, seed: int) -> np.ndarray:
    """H-bar by a loop over the mini-batches of the seeded permutation (AdaCore §5.2)."""
    from prune import random_streams

    n = len(hess)
    perm = torch.randperm(n, generator=random_streams.generator(seed, "hessian_batches")).numpy()
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
    np.testing.assert_allclose(adacore.hess[torch.arange(23)].numpy(), hbar, rtol=1e-12)
    assert adacore.params()["hessian_batch"] == batch
    assert len({tuple(np.round(h.ravel(), 12)) for h in hbar}) == -(-23 // batch)  # one H-bar per batch
    u = g / (hbar + 1e-3 * hbar.mean())
    n = len(u)
    direct = pairwise(lambda i, j: np.mean([np.linalg.norm(u[i, m] - u[j, m]) for m in range(samples)]), n=n)
    # float32 distances from Gram matrices: cancellation costs a few ulps where |u_i - u_j| << |u_i|
    np.testing.assert_allclose(adacore.distances(torch.arange(n)).numpy(), direct, rtol=5e-5, atol=1e-5)
    # the permutation depends on the store's seed
    store.meta["seed"] = 8
    other = method("adacore", store, hessian_batch=batch, posterior=posterior).hess[torch.arange(23)]
    assert not np.allclose(other.numpy(), hbar) or batch >= 23


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
        u = method("adacore", store, hessian_batch=batch).preconditioned(torch.arange(n))[:, 0].double().norm(dim=1)
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


def test_herding_distance_is_the_last_layer_gradient_distance_and_its_greedy_herds():
    store = random_store()
    for posterior, g, h in (("point", store.grad_logit_point[:, None], store.embedding_point[:, None]),
                            ("mean", store.grad_logit, store.embedding)):
        g, h = g.double().numpy(), h.double().numpy()
        h = np.concatenate([h, np.ones((*h.shape[:2], 1))], -1)
        G = np.einsum("nmc,nmj->nmcj", g, h).reshape(N, g.shape[1], -1)  # materialised (p - y) (x) [h; 1]
        direct = pairwise(lambda i, j: np.mean([np.linalg.norm(G[i, m] - G[j, m]) for m in range(g.shape[1])]))
        herding = method("herding", store, posterior=posterior)
        np.testing.assert_allclose(herding.distances(ROWS).numpy(), direct, rtol=1e-6, atol=1e-6)
    [result] = herding.select_pools(ROWS, [(ROWS, 4)])
    expected = kernel_herding(gaussian_kernel_(herding.distances(ROWS)), 4)
    assert result.positions.tolist() == expected.order.tolist()
    assert result.weights.tolist() == [N / 4] * 4  # each stands for p / k of its pool
    assert result.objective == pytest.approx(expected.mmd2)


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
    assert MethodConfig().learned_window == 0 and crest.params()["learned_window"] == 0
    pools = crest.pools(torch.arange(40), 9, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([p for p, _ in pools]).tolist()) == list(range(40)) and crest.dropped == 0


def test_lcmat_chooses_top_k_per_class_by_default():
    """The authors' code's scope (docs/results.md: not worse than the whole set at any rho on digits)."""
    store = random_store(n=40)
    lcmat = method("lcmat", store, top_k=5)
    assert lcmat.params()["top_k_scope"] == "class"
    rows = torch.nonzero(store.labels == 1).flatten()
    generator = torch.Generator().manual_seed(0)
    lcmat.select_pools(rows, lcmat.pools(rows, 2, generator))
    expected = top_variance_coordinates(store.hess_logit_point[rows, None], store.embedding_point[rows, None], 5)
    assert lcmat.coordinates.tolist() == expected.tolist()


def gradients(n: int, samples: int, classes: int, seed: int) -> torch.Tensor:
    """Logit gradients p - y of a confident model: many near-duplicates near 0, as real stores have."""
    g = torch.Generator().manual_seed(seed)
    p = (torch.randn(n, samples, classes, generator=g) * 4).softmax(-1)
    return p - torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.int64), classes).float()[:, None]


@pytest.mark.parametrize("threads", [1, 2])
def test_blocked_distances_match_the_direct_formula(monkeypatch, threads):
    """Many blocks (and two worker threads): the upper-triangle blocks mirrored give every entry."""
    from prune.selection.methods import distances

    monkeypatch.setattr(distances, "BLOCK_ENTRIES", 300)  # 5 rows per block at p = 61
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = gradients(61, 3, 7, seed=1)
        lam = torch.rand(61, 3, 4, generator=torch.Generator().manual_seed(2))
        h = torch.rand(61, 3, 5, generator=torch.Generator().manual_seed(3))
        euclid = distances.expected_euclidean(x)
        last = distances.expected_last_layer(x, h, lam, 0.3)
    finally:
        torch.set_num_threads(previous)
    xd, hd = x.double(), torch.cat([h.double(), torch.ones(61, 3, 1, dtype=torch.float64)], -1)
    big_g = (xd[..., :, None] * hd[..., None, :]).flatten(2)  # G = g (x) [h; 1], (p, M, C (e + 1))
    direct = torch.stack([torch.cdist(xd[:, m], xd[:, m]) for m in range(3)]).mean(0)
    direct_last = torch.stack([torch.cdist(big_g[:, m], big_g[:, m]) + 0.3 * torch.cdist(lam[:, m].double(), lam[:, m].double(), p=1)
                               for m in range(3)]).mean(0)
    for got, want in ((euclid, direct), (last, direct_last)):
        assert got.dtype == torch.float32 and torch.equal(got, got.T) and not got.diagonal().any()
        # float32 Gram products: an entry near 0 is off by up to sqrt(eps) times the norms
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-3 * float(want.max()))


@pytest.mark.parametrize("name", ["craig", "lcmat"])
def test_float32_distances_pick_as_float64(monkeypatch, name):
    """float32 distances (the default) pick what float64 ones pick, up to near-ties: F within 1e-5.

    On the Fashion-MNIST store of issue 13 (M = 4, 5 %) craig kept 2,991 of 3,000 picks with F
    equal to 4e-9; here a pool of 600 confident-model gradients, whose orders may part only
    where two candidates' float64 gains agree to 1e-5.
    """
    from prune.selection.engine import facility_location
    from prune.selection.methods import distances

    store = random_store(n=600, samples=2)
    store.grad_logit = gradients(600, 2, C, seed=4)
    chosen = method(name, store, **({"top_k": 6} if name == "lcmat" else {}))
    if name == "lcmat":
        chosen.coordinates = top_variance_coordinates(store.hess_logit, store.embedding, 6)
    rows = torch.arange(600)
    single = chosen.distances(rows)
    for fn in ("expected_euclidean", "expected_last_layer"):
        original = getattr(distances, fn)
        monkeypatch.setattr(f"prune.selection.methods.{name if name == 'lcmat' else 'craig'}.{fn}",
                            lambda *a, _f=original, **k: _f(*a, **k, dtype=torch.float64), raising=False)
    double = chosen.distances(rows)
    assert single.dtype == torch.float32 and double.dtype == torch.float64
    picks32, picks64 = facility_location(single, 60).order.tolist(), facility_location(double, 60).order.tolist()
    top = float(double.max())

    def f(order):  # F(S) under the float64 distances
        return float((top - double[order]).clamp_min(0).max(0).values.sum()) if order else 0.0

    # identical up to a near-tie: where the orders part, both candidates gain the same to 1e-5
    t = next((i for i, (a, b) in enumerate(zip(picks32, picks64)) if a != b), len(picks64))
    if t < len(picks64):
        prefix = f(picks64[:t])
        gains = [f(picks64[:t] + [j]) - prefix for j in (picks32[t], picks64[t])]
        assert gains[0] == pytest.approx(gains[1], rel=1e-5)
    assert f(picks32) == pytest.approx(f(picks64), rel=1e-5)


def test_rows_per_class_is_one_sort_of_the_labels():
    from prune.selection.coreset import Candidates, rows_per_class

    labels = torch.randint(0, 6, (500,), generator=torch.Generator().manual_seed(0))
    labels[labels == 4] = 5  # an empty class
    rows = rows_per_class(Candidates(labels, {"num_classes": 7}))
    assert [r.tolist() for r in rows] == [torch.nonzero(labels == c).flatten().tolist() for c in range(7)]


def test_crest_says_how_many_it_dropped_as_learned_per_class(capsys):
    """The learned drop is printed and recorded per class (``prune inspect`` shows it)."""
    from prune.selection import Budget, Candidates, DifficultyConfig, select

    store = random_store(n=40)
    store.loss_per_epoch[:] = 1.0
    store.loss_per_epoch[:10] = 0.01  # learned: 3, 3, 2, 2 of classes 0..3
    candidates = Candidates(store.labels, {"num_classes": C, "source": "synthetic"}, store=store)
    manifest = select(candidates, MethodConfig("crest", subset_size=7, learned_window=2), Budget(0.2),
                      difficulty=DifficultyConfig(drop_hard=0))
    assert manifest.selection["dropped_learned"] == [3, 3, 2, 2]
    assert "crest: dropped 10 examples as learned" in " ".join(capsys.readouterr().err.split())


def test_the_pool_limit_note_is_printed_only_where_max_pool_split_a_class(capsys):
    """crest forms pools of --subset-size, so --max-pool's note never applies to it."""
    from prune.selection import Budget, Candidates, DifficultyConfig, select

    store = random_store(n=40)
    candidates = Candidates(store.labels, {"num_classes": C, "source": "synthetic"}, store=store)
    stage = DifficultyConfig(drop_hard=0)
    crest = select(candidates, MethodConfig("crest", subset_size=4), Budget(0.5), difficulty=stage)
    assert crest.selection["pools"] == 12 and "--max-pool" not in capsys.readouterr().err
    craig = select(candidates, MethodConfig("craig", max_pool=4), Budget(0.5), difficulty=stage)
    assert craig.selection["pools"] == 12
    assert "4 pools larger than --max-pool 4 were split at random: 12 greedy runs" in " ".join(capsys.readouterr().err.split())
    select(candidates, MethodConfig("craig"), Budget(0.5), difficulty=DifficultyConfig(drop_hard="auto"))  # no split: no note
    assert "--max-pool" not in capsys.readouterr().err  # (the progress lines count "pools")


def test_greedy_shows_its_runs_done_of_planned_on_a_terminal(terminal):
    from prune.selection import Budget, Candidates, DifficultyConfig, select
    from prune.training import quiet

    store = random_store(n=40)
    candidates = Candidates(store.labels, {"num_classes": C, "source": "synthetic"}, store=store)
    stage = DifficultyConfig(drop_hard=0)
    select(candidates, MethodConfig("craig", max_pool=4), Budget(0.5), difficulty=stage)
    assert "select craig" in terminal.getvalue() and "12/12" in terminal.getvalue()
    terminal.seek(0), terminal.truncate()
    with quiet():
        select(candidates, MethodConfig("craig", max_pool=4), Budget(0.5), difficulty=stage)
    assert "select craig" not in terminal.getvalue()
