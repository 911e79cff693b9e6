"""The field's pruning methods (prune.selection.field) against direct numpy / plain-loop
computations on small random inputs, and the properties each paper relies on."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from prune.selection.field import ccs, d2, dual, kcenter, moderate, ranking, scores


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _probs(n, m, c, seed=0):
    logits = torch.randn(n, m, c, generator=_gen(seed), dtype=torch.float64)
    return torch.softmax(logits, -1)


# ---------------------------------------------------------------- scores


def test_el2n_is_mean_norm_of_error():
    p, y = _probs(7, 3, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    expect = [np.mean([np.linalg.norm(p[i, m].numpy() - np.eye(4)[y[i]]) for m in range(3)]) for i in range(7)]
    np.testing.assert_allclose(scores.el2n(p, y).numpy(), expect, rtol=1e-12)
    np.testing.assert_allclose(scores.el2n(p[:, 0], y).numpy(),
                               [np.linalg.norm(p[i, 0].numpy() - np.eye(4)[y[i]]) for i in range(7)], rtol=1e-12)


def test_grand_is_the_last_layer_gradient_norm():
    """||∇_W ℓ|| for ℓ = CE(W [h; 1], y), by autograd, equals ||g|| sqrt(||h||^2 + 1)."""
    n, m, c, e = 5, 2, 3, 4
    h = torch.randn(n, m, e, generator=_gen(1), dtype=torch.float64)
    w = torch.randn(c, e + 1, generator=_gen(2), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    g = torch.softmax(torch.cat([h, torch.ones(n, m, 1, dtype=torch.float64)], 2) @ w.T, -1) - torch.eye(c, dtype=torch.float64)[y][:, None]
    expect = np.zeros(n)
    for i in range(n):
        for s in range(m):
            wi = w.clone().requires_grad_(True)
            logits = wi @ torch.cat([h[i, s], torch.ones(1, dtype=torch.float64)])
            torch.nn.functional.cross_entropy(logits[None], y[i:i + 1]).backward()
            expect[i] += float(wi.grad.norm()) / m
    np.testing.assert_allclose(scores.grand(g, h).numpy(), expect, rtol=1e-10)


def test_forgetting_events_counts_transitions_and_never_learned_get_t():
    margin = torch.tensor([[1.0, -1, 1, -1, 1, 1],    # learned, forgotten twice
                           [-1.0, -1, -1, -1, -1, -1],  # never learned -> T = 6
                           [1.0, 1, 1, 1, 1, 1],      # unforgettable -> 0
                           [-1.0, 1, 1, 1, 1, -1],    # learned late, forgotten at the end
                           [0.0, 0, 0, 0, 0, 0]])     # margin 0 is not correct -> never learned
    np.testing.assert_array_equal(scores.forgetting_events(margin).numpy(), [2, 6, 0, 1, 6])
    np.testing.assert_array_equal(scores.forgetting_events(margin > 0).numpy(), [2, 6, 0, 1, 6])  # correctness
    np.testing.assert_array_equal(scores.forgetting_events((margin > 0).to(torch.uint8)).numpy(), [2, 6, 0, 1, 6])
    rand = torch.randn(20, 9, generator=_gen(3))
    for i in range(20):
        row = [bool(v > 0) for v in rand[i]]
        count = sum(1 for a, b in zip(row, row[1:]) if a and not b) if any(row) else 9
        assert scores.forgetting_events(rand)[i] == count


def test_aum_is_mean_margin_low_is_hard():
    logits = torch.randn(6, 4, 5, generator=_gen(4), dtype=torch.float64)  # (n, T, C)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    margin = torch.stack([logits[i, :, y[i]] - torch.cat([logits[i, :, :y[i]], logits[i, :, y[i] + 1:]], 1).max(1).values
                          for i in range(6)])
    expect = [np.mean([logits[i, t, y[i]].item() - max(logits[i, t, c].item() for c in range(5) if c != y[i])
                       for t in range(4)]) for i in range(6)]
    np.testing.assert_allclose(scores.aum(margin).numpy(), expect, rtol=1e-12)
    assert scores.aum(margin).dtype == torch.float64


def test_entropy_and_least_confidence_average_the_samples_first():
    p = _probs(6, 3, 5, seed=5)
    mean = p.mean(1).numpy()
    np.testing.assert_allclose(scores.entropy(p).numpy(), [-(row * np.log(row)).sum() for row in mean], rtol=1e-12)
    np.testing.assert_allclose(scores.least_confidence(p).numpy(), 1 - mean.max(1), rtol=1e-12)
    one_hot = torch.eye(3, dtype=torch.float64)  # 0 log 0 = 0: a certain prediction has entropy 0
    np.testing.assert_array_equal(scores.entropy(one_hot).numpy(), [0, 0, 0])


# ---------------------------------------------------------------- ranking


def test_keep_by_score_ranks_within_rows_with_index_ties():
    s = torch.tensor([0.5, 0.9, 0.1, 0.9, 0.3, 0.5, 0.7], dtype=torch.float64)
    rows = torch.tensor([6, 0, 1, 3, 5])
    assert ranking.keep_by_score(s, rows, 3, "hard").tolist() == [1, 3, 6]
    assert ranking.keep_by_score(s, rows, 2, "easy").tolist() == [5, 0]
    expect = sorted(rows.tolist(), key=lambda r: (-float(s[r]), r))[:4]
    assert ranking.keep_by_score(s, rows, 4).tolist() == expect
    with pytest.raises(ValueError):
        ranking.keep_by_score(s, rows, 1, "middle")


def test_keep_easy_and_hard_are_complementary():
    s = torch.randint(0, 4, (30,), generator=_gen(6)).to(torch.float64)  # many ties
    rows = torch.randperm(30, generator=_gen(7))[:20]
    for k in range(21):
        hard = set(ranking.keep_by_score(s, rows, k, "hard").tolist())
        easy = set(ranking.keep_by_score(s, rows, 20 - k, "easy").tolist())
        assert not hard & easy and hard | easy == set(rows.tolist())
        if 0 < k < 20:
            assert min(s[list(hard)]) >= max(s[list(easy)])


# ---------------------------------------------------------------- k-center


def _greedy_reference(x: np.ndarray, k: int, first: int) -> list[int]:
    picks, nearest = [first], np.linalg.norm(x - x[first], axis=1)
    while len(picks) < k:
        nearest[picks] = -1
        nxt = int(np.argmax(nearest))
        picks.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[nxt], axis=1))
    return picks


def test_kcenter_matches_the_plain_greedy_and_chunks_do_not_matter():
    x = torch.randn(40, 3, generator=_gen(8))
    order = kcenter.kcenter_greedy(x, 10, start=17)
    assert order[0] == 17 and order.tolist() == _greedy_reference(x.double().numpy(), 10, 17)
    assert kcenter.kcenter_greedy(x, 10, 17, chunk=7).tolist() == order.tolist()
    assert kcenter.kcenter_greedy(x, 10)[0] == 0  # from the first point by default


def test_kcenter_radius_within_twice_the_optimum():
    for seed in range(5):
        x = torch.randn(9, 2, generator=_gen(10 + seed), dtype=torch.float64)
        d = torch.cdist(x, x).numpy()
        for k in (2, 3):
            best = min(d[:, list(c)].min(1).max() for c in itertools.combinations(range(9), k))
            order = kcenter.kcenter_greedy(x, k, start=seed)
            assert kcenter.covering_radius(x, order) <= 2 * best + 1e-12


def test_kcenter_never_repeats_a_point_even_with_duplicates():
    x = torch.zeros(5, 2)
    assert sorted(kcenter.kcenter_greedy(x, 5, 3).tolist()) == [0, 1, 2, 3, 4]
    assert kcenter.kcenter_greedy(x, 9).numel() == 5


# ---------------------------------------------------------------- Moderate-DS


def test_moderate_keeps_distances_nearest_the_median():
    x = torch.randn(21, 4, generator=_gen(11), dtype=torch.float64)
    dist = np.linalg.norm(x.numpy() - x.numpy().mean(0), axis=1)
    np.testing.assert_allclose(moderate.centre_distances(x).numpy(), dist, rtol=1e-12)
    kept = moderate.moderate(x, 5).tolist()
    gap = np.abs(dist - np.median(dist))
    assert kept == sorted(range(21), key=lambda i: (gap[i], i))[:5]
    assert kept[0] == int(np.argmin(gap)) and max(gap[kept]) <= min(np.delete(gap, kept))
    even = torch.randn(8, 2, generator=_gen(12), dtype=torch.float64)  # an even count: the mean of the middle two
    d8 = np.linalg.norm(even.numpy() - even.numpy().mean(0), axis=1)
    gap8 = np.abs(d8 - (np.sort(d8)[3] + np.sort(d8)[4]) / 2)
    assert moderate.moderate(even, 2).tolist() == sorted(range(8), key=lambda i: (gap8[i], i))[:2]


# ---------------------------------------------------------------- CCS


def test_ccs_beta_table_and_interpolation():
    assert [ccs.ccs_beta(kept) for kept in (0.7, 0.5, 0.3, 0.2, 0.1)] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert ccs.ccs_beta(1.0) == 0 and ccs.ccs_beta(0.8) == 0
    assert ccs.ccs_beta(0.4) == pytest.approx(0.15) and ccs.ccs_beta(0.01) == pytest.approx(0.49)
    rates = np.linspace(0.01, 1, 100)
    betas = [ccs.ccs_beta(k) for k in rates]
    assert all(a >= b - 1e-12 for a, b in zip(betas, betas[1:]))  # more pruning, larger cut-off
    with pytest.raises(ValueError):
        ccs.ccs_beta(0)


def test_ccs_strata_match_a_direct_computation():
    s = torch.rand(200, generator=_gen(13), dtype=torch.float64) ** 3
    parts = ccs.ccs_strata(s, 20, 0.1, strata=5)
    ranked = sorted(range(200), key=lambda i: (-float(s[i]), i))
    kept = sorted(ranked[20:])
    lo, hi = min(float(s[i]) for i in kept), max(float(s[i]) for i in kept)
    bins = {b: [i for i in kept if min(int((float(s[i]) - lo) / ((hi - lo) / 5)), 4) == b] for b in range(5)}
    assert [p.tolist() for p, _ in parts] == [bins[b] for b in range(5) if bins[b]]
    budgets = [b for _, b in parts]
    assert sum(budgets) == 20 and all(b <= len(p) for p, b in parts)
    level = max(budgets)  # water-filling: a stratum below the level is taken whole
    assert all(b == len(p) or b >= level - 1 for p, b in parts)


def test_ccs_never_takes_from_the_cutoff_and_is_seeded():
    s = torch.randn(300, generator=_gen(14), dtype=torch.float64)
    beta = 0.3
    hardest = set(torch.argsort(s, descending=True, stable=True)[:90].tolist())
    for seed in range(5):
        picked = ccs.ccs(s, 30, beta, _gen(seed), strata=10)
        assert picked.numel() == 30 and len(set(picked.tolist())) == 30
        assert not hardest & set(picked.tolist())
    assert ccs.ccs(s, 30, beta, _gen(1)).tolist() == ccs.ccs(s, 30, beta, _gen(1)).tolist()
    assert ccs.ccs(s, 30, beta, _gen(1)).tolist() != ccs.ccs(s, 30, beta, _gen(2)).tolist()
    assert ccs.ccs(s, 250, 0.5, _gen(0)).numel() == 250  # the cut-off never leaves fewer than k
    assert ccs.ccs(torch.ones(10, dtype=torch.float64), 4, 0.0, _gen(0)).numel() == 4  # equal scores: one stratum


# ---------------------------------------------------------------- D2


def _d2_reference(x: np.ndarray, s: np.ndarray, k: int, nb: int, gf: float, gr: float) -> list[int]:
    p = len(x)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    nbrs = []
    for i in range(p):
        others = sorted((j for j in range(p) if j != i), key=lambda j: (d[i, j], j))
        nbrs.append(others[:nb])
    s = np.array([s[i] + sum(math.exp(-gf * d[i, j]) * s[j] for j in nbrs[i]) for i in range(p)])
    picked = []
    for _ in range(k):
        i = max((j for j in range(p) if j not in picked), key=lambda j: (s[j], -j))
        picked.append(i)
        for j in nbrs[i]:
            s[j] -= math.exp(-gr * d[i, j]) * s[i]
    return picked


def test_d2_matches_plain_message_passing(monkeypatch):
    x = torch.randn(30, 3, generator=_gen(15), dtype=torch.float64)
    s = torch.rand(30, generator=_gen(16), dtype=torch.float64)
    expect = _d2_reference(x.numpy(), s.numpy(), 12, 4, 1.0, 0.1)
    assert d2.d2_select(x, s, 12, neighbours=4).tolist() == expect
    monkeypatch.setattr(d2, "CHUNK_ELEMENTS", 50)  # a few rows per kNN block
    assert d2.d2_select(x, s, 12, neighbours=4).tolist() == expect
    index, distance = d2.knn_graph(x, 4)
    assert (index != torch.arange(30)[:, None]).all() and (distance[:, 1:] >= distance[:, :-1]).all()


def test_d2_without_neighbours_is_top_k_by_score():
    x = torch.randn(25, 2, generator=_gen(17))
    s = torch.randint(0, 5, (25,), generator=_gen(18)).to(torch.float64)
    top = sorted(range(25), key=lambda i: (-float(s[i]), i))[:10]
    assert d2.d2_select(x, s, 10, neighbours=0, gamma_reverse=0.0).tolist() == top


def test_d2_reverse_messages_spread_the_picks():
    """Two tight clusters, the left one harder: plain top-k takes only the left; D2 takes both."""
    left = torch.randn(10, 2, generator=_gen(19)) * 0.01
    right = torch.randn(10, 2, generator=_gen(20)) * 0.01 + 10
    x = torch.cat([left, right])
    s = torch.cat([torch.full((10,), 1.0), torch.full((10,), 0.8)]).double()
    picks = d2.d2_select(x, s, 4, neighbours=9, gamma_reverse=0.0).tolist()
    assert any(i < 10 for i in picks) and any(i >= 10 for i in picks)


# ---------------------------------------------------------------- DUAL


def test_dual_score_matches_window_loop():
    p = torch.rand(6, 30, generator=_gen(21), dtype=torch.float64)
    expect = [np.mean([np.std(p[i, k:k + 10].numpy(), ddof=1) * (1 - p[i, k:k + 10].numpy().mean()) for k in range(21)])
              for i in range(6)]
    np.testing.assert_allclose(dual.dual_score(p).numpy(), expect, rtol=1e-12)
    short = p[:, :4]  # fewer epochs than the window: one window of all of them
    np.testing.assert_allclose(dual.dual_score(short).numpy(),
                               [np.std(r, ddof=1) * (1 - r.mean()) for r in short.numpy()], rtol=1e-12)
    assert (dual.dual_score(torch.full((3, 12), 0.4, dtype=torch.float64)) == 0).all()


def test_dual_weights_are_beta_pdf_times_score():
    from scipy.stats import beta as beta_dist

    score = torch.rand(50, generator=_gen(22), dtype=torch.float64)
    mean = torch.rand(50, generator=_gen(23), dtype=torch.float64) * 0.98 + 0.01
    for kept in (0.1, 0.3, 0.7):
        anchor = mean.numpy()[np.argsort(-score.numpy(), kind="stable")[:10]].mean()
        b = 15 * (1 - anchor) * (1 - (1 - kept) ** 4)
        expect = beta_dist.pdf(mean.numpy(), 16 - b, b) * score.numpy()
        np.testing.assert_allclose(dual.dual_weights(score, mean, kept).numpy(), expect, rtol=1e-9)
    # more pruning moves the Beta's mass to confident (easy) examples
    easy, hard = torch.tensor([0.95]).double(), torch.tensor([0.3]).double()
    ratio = [float(dual.dual_weights(torch.ones(2).double(), torch.cat([easy, hard]), kept)[0]
                   / dual.dual_weights(torch.ones(2).double(), torch.cat([easy, hard]), kept)[1]) for kept in (0.5, 0.1)]
    assert ratio[1] > ratio[0]


def test_dual_sample_is_seeded_and_follows_the_weights():
    w = torch.rand(200, generator=_gen(24), dtype=torch.float64)
    a, b, c = (dual.dual_sample(w, 20, _gen(seed)) for seed in (1, 1, 2))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist() and len(set(a.tolist())) == 20
    heavy = torch.zeros(100, dtype=torch.float64)
    heavy[:5] = 1.0  # only five positive weights: all of them, then zero-weight examples at random
    picked = dual.dual_sample(heavy, 8, _gen(3))
    assert set(picked[:5].tolist()) == set(range(5)) and len(set(picked.tolist())) == 8
    counts = torch.zeros(4)
    for seed in range(300):  # a single draw follows the weights 1:2:3:4
        counts[dual.dual_sample(torch.tensor([1.0, 2, 3, 4], dtype=torch.float64), 1, _gen(seed))] += 1
    assert counts.argsort().tolist() == [0, 1, 2, 3]
