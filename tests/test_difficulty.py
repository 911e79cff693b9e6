"""The difficulty stage: scores against direct computations, dropping rules, strata budgets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import prune
from prune.errors import PruneError
from prune.features.store import FeatureStore
from prune.selection import Budget, Candidates, DifficultyConfig, MethodConfig, method_class, select
from prune.selection.budget import equal_split, largest_remainder
from prune.selection.difficulty import Difficulty, below_chance, stage_scores
from tests.test_methods import C, random_store


def difficulty_scores(store, name):
    return stage_scores(store, name)[0]


def direct_scores(store):
    """Each score from its definition, one example and one posterior sample at a time."""
    g, y = store.grad_logit.double().numpy(), store.labels.numpy()
    out = {"el2n": [], "loss": [], "margin": [], "trajectory": store.loss_per_epoch.double().mean(1).numpy()}
    for i in range(len(y)):
        probs = [g[i, m] + np.eye(C)[y[i]] for m in range(g.shape[1])]
        out["el2n"].append(np.mean([np.linalg.norm(g[i, m]) for m in range(g.shape[1])]))
        out["loss"].append(np.mean([-math.log(p[y[i]]) for p in probs]))
        mean = np.mean(probs, axis=0)
        out["margin"].append(max(mean[c] for c in range(C) if c != y[i]) - mean[y[i]])
    return {name: np.asarray(values) for name, values in out.items()}


@pytest.mark.parametrize("name", ["el2n", "loss", "margin", "trajectory"])
def test_scores_match_direct_computation(name):
    store = random_store()
    np.testing.assert_allclose(difficulty_scores(store, name).numpy(), direct_scores(store)[name], rtol=1e-6, atol=1e-6)


def test_margin_is_positive_exactly_when_the_posterior_mean_predicts_another_class():
    store = random_store(seed=3, n=200)
    mean_prediction = (store.grad_logit.double() + torch.nn.functional.one_hot(store.labels, C)[:, None]).mean(1).argmax(1)
    assert torch.equal(difficulty_scores(store, "margin") > 0, mean_prediction != store.labels)


def test_auto_drops_labels_believed_less_than_chance():
    store = random_store(seed=4, n=300)
    g, y = store.grad_logit.double().numpy(), store.labels.numpy()
    direct = [np.mean([g[i, m, y[i]] + 1 for m in range(g.shape[1])]) < 1 / C for i in range(len(y))]
    assert below_chance(store.grad_logit, store.labels).tolist() == direct
    stage = Difficulty(store, DifficultyConfig())
    rows = torch.nonzero(store.labels == 1).flatten()
    assert stage.kept(rows, 1).tolist() == rows[~torch.tensor(direct)[rows]].tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=8), st.data())
def test_coverage_budgets_share_equally_within_sizes(sizes, data):
    total = data.draw(st.integers(0, sum(sizes)))
    out = equal_split(sizes, total)
    assert sum(out) == total and all(0 <= b <= n for b, n in zip(out, sizes))
    open_ = [b for b, n in zip(out, sizes) if b < n]
    if open_:  # groups with room differ by at most one, and none got more than one above them
        assert max(open_) - min(open_) <= 1
        assert all(b <= min(open_) + 1 for b in out)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5), st.sampled_from(["auto", 0.3, 0.9]), st.integers(1, 4), st.floats(0.01, 1.0),
       st.sampled_from(["equal", "proportional"]))
def test_dropping_never_leaves_a_class_below_its_budget(seed, drop_hard, strata, fraction, strata_budget):
    store = random_store(seed=seed, n=60)
    candidates = Candidates(store.labels, {"num_classes": C, "source": "synthetic"}, store=store)
    manifest = select(candidates, MethodConfig("random"), Budget(fraction), seed=seed,
                      difficulty=DifficultyConfig(drop_hard=drop_hard, strata=strata, strata_budget=strata_budget))
    counts = np.bincount(store.labels.numpy()[manifest.indices], minlength=C)
    assert counts.tolist() == manifest.per_class and len(set(manifest.indices.tolist())) == len(manifest)
    sizes = np.bincount(store.labels.numpy(), minlength=C)
    assert all(d <= n - k for d, n, k in zip(manifest.selection["dropped_hard"], sizes, manifest.per_class))


def test_fraction_drops_the_hardest_of_each_class():
    store = random_store(seed=1, n=80)
    stage = Difficulty(store, DifficultyConfig(drop_hard=0.25, score="loss"))
    score = difficulty_scores(store, "loss")
    for c in range(C):
        rows = torch.nonzero(store.labels == c).flatten()
        kept = stage.kept(rows, 1)
        assert len(kept) == len(rows) - 5
        assert score[kept].max() <= score[rows[~torch.isin(rows, kept)]].min()


def test_strata_are_equal_width_bins_with_coverage_budgets():
    store = random_store(seed=2, n=400)
    stage = Difficulty(store, DifficultyConfig(drop_hard=0, strata=4))
    rows = torch.nonzero(store.labels == 0).flatten()
    parts = stage.split(rows, 20)
    score = difficulty_scores(store, "el2n")
    edges = torch.linspace(float(score[rows].min()), float(score[rows].max()), 5, dtype=torch.float64)
    assert torch.equal(torch.sort(torch.cat([p for p, _ in parts])).values, rows)
    for b, (part, _) in enumerate(parts):
        assert bool(((score[part] >= edges[b] - 1e-12) & (score[part] <= edges[b + 1] + 1e-12)).all())
    assert [k for _, k in parts] == equal_split([len(p) for p, _ in parts], 20)


def test_proportional_strata_are_quantiles_with_their_share_of_the_budget():
    store = random_store(seed=2, n=400)
    stage = Difficulty(store, DifficultyConfig(drop_hard=0, strata=5, strata_budget="proportional"))
    rows = torch.nonzero(store.labels == 0).flatten()
    parts = stage.split(rows, 13)
    score = difficulty_scores(store, "el2n")
    assert torch.equal(torch.sort(torch.cat([p for p, _ in parts])).values, rows)
    sizes = [len(p) for p, _ in parts]
    assert max(sizes) - min(sizes) <= 1  # equal counts
    for (easier, _), (harder, _) in zip(parts, parts[1:]):  # ordered by difficulty, not overlapping
        assert score[easier].max() <= score[harder].min()
    assert [k for _, k in parts] == largest_remainder(sizes, 13) and sum(k for _, k in parts) == 13


def test_auto_strata_split_a_class_only_where_its_budget_is_under_7_percent():
    store = random_store(seed=2, n=400)
    stage = Difficulty(store, DifficultyConfig(drop_hard=0, strata="auto", strata_budget="proportional"))
    rows = torch.nonzero(store.labels == 0).flatten()
    small, large = math.ceil(0.07 * len(rows)) - 1, math.ceil(0.07 * len(rows))
    assert len(stage.split(rows, small)) == 5 and sum(k for _, k in stage.split(rows, small)) == small
    (part, budget), = stage.split(rows, large)
    assert torch.equal(part, rows) and budget == large
    assert DifficultyConfig(strata="AUTO").strata == "auto" and DifficultyConfig(strata="3").strata == 3


@pytest.mark.parametrize("method", ["craig", "adacore", "lcmat", "crest", "ensemble"])
def test_facility_location_methods_keep_the_difficulty_distribution_by_default(method):
    assert method_class(method).default_difficulty == DifficultyConfig(strata="auto", strata_budget="proportional")
    assert method_class("ccs").default_difficulty == DifficultyConfig(strata=10, strata_budget="equal")
    assert method_class("clean").default_difficulty == DifficultyConfig() and not method_class("random").default_difficulty.active
    assert method_class("herding").default_difficulty == DifficultyConfig()  # drops, no strata: it keeps the distribution itself


def test_options_are_checked():  # a Python caller reads the parameters' names; the CLI, the flags
    with pytest.raises(PruneError, match="^drop_hard must be"):
        DifficultyConfig(drop_hard=1.5)
    with pytest.raises(PruneError, match="^drop_hard must be"):
        DifficultyConfig(drop_hard="most")
    with pytest.raises(PruneError, match="^strata must be"):
        DifficultyConfig(strata=0)
    with pytest.raises(PruneError, match="^unknown score 'forgetting'") as error:
        DifficultyConfig(score="forgetting")
    assert error.value.cli_message.startswith("unknown --difficulty-score 'forgetting'")


def test_random_with_the_stage_needs_features():
    labels = torch.arange(40) % 4
    with pytest.raises(PruneError, match="needs features"):
        select(Candidates(labels, {"num_classes": 4, "source": "x"}), MethodConfig("ccs"), Budget(0.2))


def blobs(tmp_path, noise_free_seed=0):
    """Four well-separated Gaussian blobs in 8 dimensions: an MLP separates them in one epoch."""
    rng = np.random.default_rng(noise_free_seed)
    centres = rng.normal(size=(4, 8)) * 6
    def draw(n):
        y = np.arange(n) % 4
        return (centres[y] + rng.normal(size=(n, 8))).astype(np.float32), y.astype(np.int64)
    x_train, y_train = draw(800)
    x_test, y_test = draw(200)
    path = tmp_path / "blobs.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}"


def test_auto_drops_nothing_on_a_clean_separable_set(tmp_path):
    manifest = prune.select_coreset(blobs(tmp_path), "ccs", fraction=0.1, warmup_epochs=3, posterior_samples=2,
                                    device="cpu")
    assert manifest.selection["dropped_hard"] == [0, 0, 0, 0]


def test_auto_finds_known_flips(tmp_path):
    path = tmp_path / "features.h5"
    manifest = prune.select_coreset(blobs(tmp_path), "ccs", fraction=0.1, warmup_epochs=3, posterior_samples=2,
                                    label_noise=0.2, noise_seed=1, device="cpu", store=path)
    flipped = set(manifest.label_noise["flipped"])
    opened = FeatureStore.open(path)
    hard = set(torch.nonzero(below_chance(opened.grad_logit, opened.labels)).flatten().tolist())
    assert len(flipped) == 160 and sum(manifest.selection["dropped_hard"]) == len(hard)
    assert len(hard & flipped) >= 0.9 * len(flipped)  # recall
    assert len(hard & flipped) >= 0.9 * len(hard)     # precision
    assert not flipped & set(manifest.indices.tolist())


class CountingRows:
    """A feature array that records the rows of every read."""

    def __init__(self, values: torch.Tensor):
        self.values, self.reads = values, []

    def __getitem__(self, rows):
        self.reads.append(rows.clone())
        return self.values[rows]


def test_the_stage_reads_each_row_once_in_chunk_sized_blocks(monkeypatch):
    """One pass over the store, whatever the classes: memory stays one block however large n is."""
    monkeypatch.setattr("prune.features.store.CHUNK_ROWS", 64)  # chunk_rows reads it per call
    store = random_store(seed=6, n=300)
    expected = difficulty_scores(store, "el2n")
    store.grad_logit = CountingRows(store.grad_logit)
    stage = Difficulty(store, DifficultyConfig(strata=4))
    reads = store.grad_logit.reads
    assert torch.equal(torch.cat(reads), torch.arange(300)) and max(len(r) for r in reads) == 64
    for c in range(C):
        stage.split(torch.nonzero(store.labels == c).flatten(), 5)
    assert len(reads) == 5  # the classes only index the scores
    torch.testing.assert_close(stage.score, expected)
