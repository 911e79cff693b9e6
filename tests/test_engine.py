"""The facility-location engine against naive greedy, brute force and direct computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from prune.selection import engine
from prune.selection.engine import FacilityLocationResult, facility_location, split_pool

# --------------------------------------------------------------------------- references


def naive_spec(d: np.ndarray, k: int) -> list[int]:
    """methods.md literally, in float64: s = D - d, cur starts at 0, O(p^2 k), ties lowest index."""
    d = np.asarray(d, dtype=np.float64)
    p = d.shape[0]
    s = d.max() - d
    cur = np.zeros(p)
    chosen = np.zeros(p, dtype=bool)
    order = []
    for _ in range(k):
        gains = np.maximum(s - cur[:, None], 0.0).sum(axis=0)  # gain of column j
        gains[chosen] = -np.inf
        j = int(np.argmax(gains))  # first maximum = lowest index
        order.append(j)
        chosen[j] = True
        cur = np.maximum(cur, s[:, j])
    return order


def spec_gains(d: np.ndarray, selected: list[int]) -> np.ndarray:
    """Float64 marginal gains of every column given the selected set (selected: -inf)."""
    d = np.asarray(d, dtype=np.float64)
    s = d.max() - d
    cur = s[:, selected].max(axis=1) if selected else np.zeros(d.shape[0])
    gains = np.maximum(s - cur[:, None], 0.0).sum(axis=0)
    gains[selected] = -np.inf
    return gains


def naive_same_arithmetic(d: torch.Tensor, k: int) -> list[int]:
    """Non-lazy greedy in the engine's arithmetic (m = min(D, dist to S); gain = sum relu(m - d)),
    re-evaluating every candidate at every step: the bit-exact oracle for the lazy logic."""
    p = d.shape[0]
    m = torch.full((p,), float(d.max()), dtype=d.dtype)
    chosen = torch.zeros(p, dtype=torch.bool)
    order = []
    for _ in range(k):
        gains = torch.clamp(m - d, min=0).sum(dim=1)
        gains[chosen] = -math.inf
        j = int(torch.nonzero(gains == gains.max())[0, 0])
        order.append(j)
        chosen[j] = True
        m = torch.minimum(m, d[j])
    return order


def objective(d: np.ndarray, selected) -> float:
    d = np.asarray(d, dtype=np.float64)
    selected = list(selected)
    if not selected:
        return 0.0
    return float((d.max() - d[:, selected]).max(axis=1).sum())


# --------------------------------------------------------------------------- instances


def euclidean(x: np.ndarray) -> np.ndarray:
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    return (d + d.T) / 2  # exactly symmetric


def instance(seed: int, kind: str, p: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = int(rng.integers(5, 61)) if p is None else p
    dim = int(rng.integers(2, 6))
    if kind == "continuous":
        return euclidean(rng.normal(size=(p, dim)))
    if kind == "duplicates":  # some points copied exactly: identical columns, exact ties
        x = rng.normal(size=(p, dim))
        x[rng.integers(0, p, p // 3)] = x[rng.integers(0, p, p // 3)]
        return euclidean(x)
    if kind == "integer":  # L1 on a small grid: integer distances, exact arithmetic, many ties
        y = rng.integers(0, 4, size=(p, dim))
        return np.abs(y[:, None, :] - y[None, :, :]).sum(-1).astype(np.float64)
    raise AssertionError(kind)


def ks(p: int) -> list[int]:
    return sorted({0, 1, 2, p // 3, p - 1, p})


SEEDS = range(6)

# --------------------------------------------------------------------------- agreement with naive


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_spec_reference_on_exact_arithmetic(seed, dtype):
    """Integer distances: every sum is exact, so the float64 spec greedy is the unique answer."""
    d = instance(seed, "integer")
    full = naive_spec(d, d.shape[0])
    for k in ks(d.shape[0]):
        res = facility_location(torch.tensor(d, dtype=dtype), k)
        assert res.order.tolist() == full[:k], (seed, k)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["continuous", "duplicates", "integer"])
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_naive_greedy_bit_exactly(seed, kind, dtype):
    d = torch.tensor(instance(100 + seed, kind), dtype=dtype)
    full = naive_same_arithmetic(d, d.shape[0])
    for k in ks(d.shape[0]):
        assert facility_location(d, k).order.tolist() == full[:k], (seed, kind, k)


@pytest.mark.parametrize("kind", ["continuous", "duplicates"])
@pytest.mark.parametrize("seed", SEEDS)
def test_float32_is_a_float64_greedy_up_to_rounding(seed, kind):
    """Every float32 pick has the largest float64 spec gain (to rounding), and where it differs
    from the reference's pick the two gains tie to rounding."""
    d = instance(200 + seed, kind)
    order = facility_location(torch.tensor(d, dtype=torch.float32), d.shape[0]).order.tolist()
    assert sorted(order) == list(range(d.shape[0]))
    for t, j in enumerate(order):
        gains = spec_gains(d, order[:t])
        tol = 1e-5 * max(1.0, float(np.abs(gains[np.isfinite(gains)]).max()))
        assert gains[j] >= gains.max() - tol, (seed, t)


def test_small_and_fixed_batches_keep_the_order(monkeypatch):
    """Tiny batches force many lazy rounds and cut tie runs; a fixed batch (the CUDA path) pads."""
    cases = [torch.tensor(instance(300 + s, kind)) for s in range(3) for kind in ("duplicates", "integer")]
    expected = [naive_same_arithmetic(d, d.shape[0]) for d in cases]
    monkeypatch.setattr(engine, "_CPU_FIRST_BATCH", 1)
    monkeypatch.setattr(engine, "_CPU_BATCH_MAX", 2)
    for d, full in zip(cases, expected):
        assert facility_location(d, d.shape[0]).order.tolist() == full
    monkeypatch.setattr(engine, "_fixed_batch", lambda device: 3)
    for d, full in zip(cases, expected):
        assert facility_location(d, d.shape[0]).order.tolist() == full


# --------------------------------------------------------------------------- guarantees


@pytest.mark.parametrize("seed", range(8))
def test_within_one_minus_one_over_e_of_brute_force(seed):
    rng = np.random.default_rng(400 + seed)
    p = int(rng.integers(4, 10))
    d = euclidean(rng.normal(size=(p, 2)))
    for k in range(1, min(p, 4) + 1):
        best = max(objective(d, s) for s in itertools.combinations(range(p), k))
        res = facility_location(torch.tensor(d), k)
        assert res.objective >= (1 - 1 / math.e) * best - 1e-9
        assert res.objective <= best + 1e-9


@pytest.mark.parametrize("kind", ["continuous", "duplicates", "integer"])
def test_weights_gains_objective_match_direct_computation(kind):
    for seed in range(4):
        d = instance(500 + seed, kind)
        p = d.shape[0]
        for k in ks(p)[1:]:
            res = facility_location(torch.tensor(d, dtype=torch.float32), k)
            order = res.order.tolist()
            d32 = d.astype(np.float32).astype(np.float64)  # what the engine saw
            # objective and gains, float64
            assert res.objective == pytest.approx(objective(d32, order), rel=1e-12, abs=1e-9)
            direct = [objective(d32, order[: t + 1]) - objective(d32, order[:t]) for t in range(k)]
            np.testing.assert_allclose(res.gains.numpy(), direct, rtol=1e-9, atol=1e-9)
            assert float(res.gains.sum()) == pytest.approx(res.objective, rel=1e-12, abs=1e-9)
            assert np.all(np.diff(res.gains.numpy()) <= 1e-9)  # submodular: gains never grow
            # weights: nearest selected point, ties to the lowest pool position
            cols = sorted(order)
            nearest = np.array(cols)[np.argmin(d32[:, cols], axis=1)]
            expected = [int((nearest == j).sum()) for j in order]
            assert res.weights.tolist() == expected
            assert int(res.weights.sum()) == p


def test_result_types_and_dtypes():
    res = facility_location(torch.tensor(instance(0, "continuous"), dtype=torch.float32), 4)
    assert isinstance(res, FacilityLocationResult)
    assert res.order.dtype == torch.int64 and res.order.shape == (4,)
    assert res.gains.dtype == torch.float64 and res.gains.shape == (4,)
    assert res.weights.dtype == torch.int64 and res.weights.shape == (4,)
    assert isinstance(res.objective, float)
    with pytest.raises(AttributeError):
        res.objective = 1.0  # frozen


# --------------------------------------------------------------------------- edges and errors


def test_k_zero_and_k_equal_p():
    d = torch.tensor(instance(7, "continuous"))
    p = d.shape[0]
    empty = facility_location(d, 0)
    assert empty.order.numel() == empty.gains.numel() == empty.weights.numel() == 0
    assert empty.objective == 0.0
    full = facility_location(d, p)
    assert sorted(full.order.tolist()) == list(range(p))
    assert full.weights.tolist() == [1] * p  # zero diagonal: every point is its own nearest
    assert full.objective == pytest.approx(p * float(d.max()))
    assert facility_location(torch.zeros(0, 0), 0).order.numel() == 0


def test_all_equal_distances_pick_lowest_positions():
    for d in (torch.zeros(6, 6), torch.full((6, 6), 2.5)):
        res = facility_location(d, 4)
        assert res.order.tolist() == [0, 1, 2, 3]
        assert res.gains.tolist() == [0.0] * 4
        assert res.objective == 0.0
        assert res.weights.tolist() == [6, 0, 0, 0]


def test_nonzero_diagonal_is_not_assumed_away():
    rng = np.random.default_rng(11)
    d = instance(11, "integer", p=20)
    np.fill_diagonal(d, rng.integers(0, 3, 20))
    assert facility_location(torch.tensor(d), 20).order.tolist() == naive_spec(d, 20)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_distances_refused(bad):
    d = torch.tensor(instance(3, "continuous"))
    d[2, 5] = d[5, 2] = bad
    with pytest.raises(ValueError, match="distances contain NaN or inf; refusing to select over them"):
        facility_location(d, 3)
    with pytest.raises(ValueError, match="NaN or inf"):
        facility_location(d, 0)  # refused even when nothing would be selected


def test_bad_k_and_shape():
    d = torch.tensor(instance(4, "continuous", p=10))
    for k in (-1, 11):
        with pytest.raises(ValueError, match="out of range"):
            facility_location(d, k)
    with pytest.raises(ValueError, match="square"):
        facility_location(torch.zeros(3, 4), 1)
    with pytest.raises(TypeError):
        facility_location(d, 2.5)
    assert facility_location(d, np.int64(3)).order.numel() == 3


def test_deterministic_and_input_untouched():
    d = torch.tensor(instance(9, "duplicates"), dtype=torch.float32)
    before = d.clone()
    a, b = facility_location(d, 17), facility_location(d, 17)
    assert torch.equal(d, before)
    assert torch.equal(a.order, b.order) and torch.equal(a.weights, b.weights)
    assert torch.equal(a.gains, b.gains) and a.objective == b.objective


def test_other_dtypes_and_layouts():
    d = instance(12, "integer", p=25)
    expected = naive_spec(d, 8)
    for t in (torch.tensor(d, dtype=torch.float16), torch.tensor(d).long(), torch.tensor(d).T):
        assert facility_location(t, 8).order.tolist() == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for seed in range(4):
        for kind in ("integer", "duplicates"):
            d = torch.tensor(instance(600 + seed, kind), dtype=torch.float32)
            cpu = facility_location(d, d.shape[0] // 2)
            gpu = facility_location(d.cuda(), d.shape[0] // 2)
            assert gpu.order.device.type == "cuda"
            assert gpu.order.cpu().tolist() == cpu.order.tolist()
            assert gpu.weights.cpu().tolist() == cpu.weights.tolist()
            assert gpu.objective == pytest.approx(cpu.objective, rel=1e-12)


# --------------------------------------------------------------------------- split_pool


def test_split_pool_small_pool_unchanged():
    pos = torch.tensor([4, 9, 2])
    parts = split_pool(pos, 3, torch.Generator().manual_seed(0))
    assert len(parts) == 1 and parts[0] is pos


@pytest.mark.parametrize("p,max_pool", [(10, 3), (101, 50), (1000, 999), (7, 1)])
def test_split_pool_parts(p, max_pool):
    pos = torch.arange(p) * 3 + 5
    parts = split_pool(pos, max_pool, torch.Generator().manual_seed(1))
    assert len(parts) == math.ceil(p / max_pool)
    sizes = [part.numel() for part in parts]
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= max_pool
    assert all(torch.equal(part, torch.sort(part).values) for part in parts)
    assert sorted(torch.cat(parts).tolist()) == pos.tolist()
    again = split_pool(pos, max_pool, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    if p > 2 * max_pool:  # random, not contiguous blocks
        assert not torch.equal(torch.cat(parts), pos)


def test_split_pool_rejects_bad_max_pool():
    with pytest.raises(ValueError):
        split_pool(torch.arange(5), 0, torch.Generator().manual_seed(0))
