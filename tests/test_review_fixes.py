"""Code-review findings of issue #27 item 9, each pinned by a test that failed before its fix."""

from __future__ import annotations

import torch

from prune.data.loaded import LoadedData, Split
from prune.dynamic.selector import _Subsets
from prune.features import posterior
from prune.features import FeatureConfig, PosteriorConfig
from prune.features.build import posterior_members
from prune.models.architectures import build_model
from prune.training import TrainConfig

CLASSES, PER_CLASS, DIM = 10, 1000, 8


def _class_ordered() -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sorted by class, as a ``folder:`` source lists them: 0 ... 0, 1 ... 1, ..."""
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    return torch.randn(len(labels), DIM, generator=torch.Generator().manual_seed(0)), labels


# ------------------------------------------------- --posterior-kind hessian: the curvature rows


def test_curvature_rows_are_a_seeded_sample_of_all_rows() -> None:
    x, labels = _class_ordered()
    batches = posterior.curvature_batches(x, labels, torch.Generator().manual_seed(1), "cpu")
    seen = torch.cat([y for _, y in batches])
    assert len(seen) == posterior.CURVATURE_ROWS == 2048
    assert set(seen.tolist()) == set(range(CLASSES))  # the first 2,048 rows hold classes 0-2 only
    assert all(len(y) <= 256 for _, y in batches)
    rows = torch.cat([xb for xb, _ in batches])
    assert len({tuple(r.tolist()) for r in rows}) == len(rows)  # without replacement
    again = posterior.curvature_batches(x, labels, torch.Generator().manual_seed(1), "cpu")
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(batches, again))
    other = posterior.curvature_batches(x, labels, torch.Generator().manual_seed(2), "cpu")
    assert not torch.equal(torch.cat([y for _, y in other]), seen)


def test_curvature_rows_of_a_small_set_are_all_rows_in_order() -> None:
    x, labels = _class_ordered()
    batches = posterior.curvature_batches(x[:600], labels[:600], torch.Generator().manual_seed(1), "cpu")
    assert [len(y) for _, y in batches] == [256, 256, 88]
    assert torch.equal(torch.cat([xb for xb, _ in batches]), x[:600])


def test_hessian_posterior_estimates_curvature_on_every_class(monkeypatch) -> None:
    x, labels = _class_ordered()
    data = LoadedData(source="test", train=Split(x, labels), test=Split(x[:10], labels[:10]), num_classes=CLASSES)
    config = FeatureConfig(model="mlp", warmup=TrainConfig(epochs=0),
                           posterior=PosteriorConfig(samples=2, kind="hessian", layers="fc"))
    seen = []

    def recording(model, params, batches, sigma, samples, generator):
        seen.extend(y for _, y in batches)
        return [torch.full_like(p, sigma) for p in params]

    monkeypatch.setattr("prune.features.build.hessian_noise_scale", recording)
    model = build_model("mlp", (DIM,), CLASSES)
    next(posterior_members(model, data, labels, config, seed=0, device="cpu"))
    assert set(torch.cat(seen).tolist()) == set(range(CLASSES))


# ------------------------------------------------- dynamic selection: the candidate pool's identity


def test_a_different_pool_of_equal_length_and_sum_gets_its_own_permutation() -> None:
    subsets = _Subsets(torch.Generator().manual_seed(0))
    first, second = torch.tensor([0, 3, 4, 9]), torch.tensor([1, 2, 6, 7])  # both: 4 rows, sum 16
    assert set(subsets.draw(first, 2).tolist()) <= set(first.tolist())
    assert set(subsets.draw(second, 2).tolist()) <= set(second.tolist())


def test_the_same_pool_keeps_its_permutation() -> None:
    subsets = _Subsets(torch.Generator().manual_seed(0))
    pool = torch.tensor([0, 3, 4, 9])
    halves = subsets.draw(pool, 2), subsets.draw(pool.clone(), 2)
    assert sorted(torch.cat(halves).tolist()) == pool.tolist()  # one permutation, used up in order
