"""The field's methods as prune methods: each selection through ``prune.select`` and the CLI against the
pure function (``prune.selection.field``) run per class on the store's arrays; the warm-up's per-epoch
records against the warm model; keep easy / hard; byte-identical manifests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from prune import random_streams
from prune.data import load_dataset
from prune.errors import PruneError
from prune.features import FeatureStore
from prune.features import FeatureConfig, PosteriorConfig, build_store
from prune.features.build import warm_start
from prune.features.extract import extract_features
from prune.selection import Budget, Candidates, DifficultyConfig, MethodConfig, method_class, select
from prune.selection.field import ccs, d2, dual, kcenter, moderate, scores
from prune.selection.field.ranking import keep_by_score
from prune.training import TrainConfig
from tests.cli import fails, run, stop_features_after
from tests.test_methods import random_store

SCORES = ("el2n", "grand", "forgetting", "aum", "entropy", "least_confidence")
FIELD = (*SCORES, "kcenter", "moderate", "d2", "dual")
PAPER_KEEP = {"el2n": "hard", "grand": "hard", "forgetting": "hard", "aum": "easy", "entropy": "hard",
              "least_confidence": "hard"}
CONFIG = FeatureConfig(model="mlp", warmup=TrainConfig(epochs=3), posterior=PosteriorConfig(samples=2, layers="fc"))
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    """digits, a 3-epoch warm-up (3 checkpoints), M = 2 posterior samples of the last layer."""
    data = load_dataset("digits")
    path = tmp_path_factory.mktemp("field") / "digits.h5"
    return build_store(data, data.train.y, path, CONFIG, seed=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def store(store_path) -> FeatureStore:
    with FeatureStore.open(store_path) as opened:
        yield opened


def chosen(store, name, seed=0, **options):
    """The manifest of method ``name`` at 10 % through ``prune.select``."""
    return select(Candidates.from_store(store), MethodConfig(name, **options), Budget(0.1), seed=seed)


def classes(store, manifest):
    """(rows of class c, its budget k_c) for every class, in class order."""
    for c, k in enumerate(manifest.per_class):
        yield torch.nonzero(store.labels == c).flatten(), k


def field_score(store, name, rows, posterior="point"):
    """The pure function's score (higher = harder) of ``rows``, from the store's arrays."""
    grad, _, embedding = store.posterior_features(posterior)
    g, labels = grad[rows].double(), store.labels[rows]
    probs = g + torch.nn.functional.one_hot(labels, store.num_classes).double()[:, None]
    return {"el2n": lambda: scores.el2n(probs, labels), "grand": lambda: scores.grand(g, embedding[rows]),
            "forgetting": lambda: scores.forgetting_events(store.correct_per_epoch[rows] > 0),
            "aum": lambda: -scores.aum(store.margin_per_epoch[rows]), "entropy": lambda: scores.entropy(probs),
            "least_confidence": lambda: scores.least_confidence(probs)}[name]()


# ----------------------------------------------------------------------------- the store's per-epoch records


def test_per_epoch_records_are_the_warm_models_at_the_last_checkpoint(store):
    """The last column of p_y, margin and correctness is the warm model's, recomputed from its logits; every
    column agrees with the recorded loss (-log p_y) and the margin's sign."""
    data = load_dataset("digits")
    model = warm_start(data, data.train.y, CONFIG, seed=0, device=torch.device("cpu"))
    z = extract_features(model, data.train.x, data.train.y, batch_size=64, device="cpu")["logits"].double()
    y = data.train.y
    others = z.clone()
    others[torch.arange(len(y)), y] = -np.inf
    direct = {"prob_label": torch.softmax(z, 1)[torch.arange(len(y)), y], "margin": z[torch.arange(len(y)), y] - others.max(1).values}
    assert store.prob_label().shape == store.margin().shape == store.correct().shape == (len(y), 3)
    torch.testing.assert_close(store.prob_label()[:, -1].double(), direct["prob_label"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(store.margin()[:, -1].double(), direct["margin"], rtol=1e-5, atol=1e-5)
    assert torch.equal(store.correct()[:, -1], z.argmax(1) == y) and store.correct().dtype == torch.bool
    loss = store.loss_per_epoch[:]
    torch.testing.assert_close(-store.prob_label().double().clamp_min(1e-30).log(), loss.double(), rtol=1e-4, atol=1e-5)
    assert torch.equal(store.correct(), store.margin() > 0)  # no exact ties among the logits here
    assert (store.correct().float().mean(0)[-1] > store.correct().float().mean(0)[0])  # the warm-up learns
    rows = torch.tensor([5, 0, 1000])
    assert torch.equal(store.margin(rows), store.margin()[rows])  # read by rows
    with h5py.File(store.path, "r") as file:
        assert file["correct_per_epoch"].dtype == np.uint8 and file["margin_per_epoch"].dtype == np.float32


def test_per_epoch_records_are_resumed_from_the_work_folder(store_path, tmp_path, monkeypatch):
    """Stopped after the warm-up (its 6 checkpoint blocks) and one feature block, resumed without a warm-up:
    the same store, byte for byte."""
    import prune.features.build

    data = load_dataset("digits")
    out = tmp_path / "resumed.h5"
    with monkeypatch.context() as patch:
        stop_features_after(patch, 7)
        with pytest.raises(KeyboardInterrupt):
            build_store(data, data.train.y, out, CONFIG, seed=0, device=torch.device("cpu"))
    monkeypatch.setattr(prune.features.build, "warm_up", lambda *a, **k: pytest.fail("the warm-up ran again"))
    build_store(data, data.train.y, out, CONFIG, seed=0, device=torch.device("cpu"), resume=True)
    with h5py.File(out, "r") as got, h5py.File(store_path, "r") as want:
        for name in ("loss_per_epoch", "prob_label_per_epoch", "margin_per_epoch", "correct_per_epoch"):
            assert np.array_equal(got[name][...], want[name][...]), name
    assert out.read_bytes() == store_path.read_bytes()


def test_a_store_without_the_records_is_refused_in_one_line(store_path, tmp_path):
    old = tmp_path / "old.h5"
    shutil.copy(store_path, old)
    with h5py.File(old, "a") as file:
        for name in ("prob_label_per_epoch", "margin_per_epoch", "correct_per_epoch"):
            del file[name]
    with pytest.raises(PruneError, match=r"lacks the dataset\(s\) prob_label_per_epoch, margin_per_epoch, "
                                         "correct_per_epoch; .*re-create it"):
        FeatureStore.open(old)
    assert "lacks the dataset(s)" in fails("select", "--features", old, "--method", "craig", "--out", tmp_path / "m.json")


# ----------------------------------------------------------------------------- each method against its pure function


@pytest.mark.parametrize("name", SCORES)
def test_score_methods_keep_what_the_score_ranks_first_per_class(store, name):
    for keep in (None, "easy", "hard"):
        manifest = chosen(store, name, keep=keep)
        side = keep or PAPER_KEEP[name]
        expect = [rows[keep_by_score(field_score(store, name, rows), torch.arange(len(rows)), k, side)]
                  for rows, k in classes(store, manifest)]
        assert manifest.indices.tolist() == torch.sort(torch.cat(expect)).values.tolist()
        assert manifest.method["params"]["keep"] == side and "difficulty" not in manifest.method["params"]
        share = {c: len(rows) / k for c, (rows, k) in enumerate(classes(store, manifest))}  # gamma = n_c / k_c
        np.testing.assert_allclose(manifest.weights, [share[int(store.labels[i])] for i in manifest.indices])


@pytest.mark.parametrize("name", ["el2n", "grand", "entropy", "least_confidence"])
def test_final_scores_average_the_posterior_samples_with_posterior_mean(store, name):
    manifest = chosen(store, name, posterior="mean")
    expect = [rows[keep_by_score(field_score(store, name, rows, "mean"), torch.arange(len(rows)), k, "hard")]
              for rows, k in classes(store, manifest)]
    assert manifest.indices.tolist() == torch.sort(torch.cat(expect)).values.tolist()
    assert manifest.method["params"]["posterior"] == "mean" and manifest.method["params"]["posterior_samples"] == 2


@pytest.mark.parametrize("name", SCORES)
def test_keep_easy_and_hard_take_the_two_ends_of_each_class(store, name):
    easy, hard = (chosen(store, name, keep=keep) for keep in ("easy", "hard"))
    for rows, k in classes(store, easy):
        score = field_score(store, name, rows)
        in_easy = torch.isin(rows, torch.from_numpy(easy.indices))
        in_hard = torch.isin(rows, torch.from_numpy(hard.indices))
        assert int(in_easy.sum()) == int(in_hard.sum()) == k and not (in_easy & in_hard).any()  # 2 k <= n_c
        assert score[in_hard].min() >= score[in_easy].max()


def test_aum_keeps_the_high_margins_by_default_and_el2n_the_high_errors(store):
    manifest = chosen(store, "aum")
    for rows, k in classes(store, manifest):
        aum = store.margin(rows).double().mean(1)
        picked = torch.isin(rows, torch.from_numpy(manifest.indices))
        assert aum[picked].min() >= aum[~picked].max()
    manifest = chosen(store, "el2n")
    for rows, k in classes(store, manifest):
        error = store.grad_logit_point[rows].norm(dim=1)
        picked = torch.isin(rows, torch.from_numpy(manifest.indices))
        assert error[picked].min() >= error[~picked].max()


def test_kcenter_is_the_greedy_from_the_first_of_a_seeded_permutation(store):
    manifest = chosen(store, "kcenter", seed=3)
    generator, expect = random_streams.generator(3, "selection"), []
    embedding = store.embedding_point[:]
    for rows, k in classes(store, manifest):
        pool = rows[torch.randperm(len(rows), generator=generator)]
        order = kcenter.kcenter_greedy(embedding[pool], k, start=0)
        expect.append(pool[order])
    assert manifest.indices.tolist() == torch.sort(torch.cat(expect)).values.tolist()
    assert chosen(store, "kcenter", seed=4).indices.tolist() != manifest.indices.tolist()


def test_moderate_keeps_the_distances_nearest_each_class_median(store):
    manifest = chosen(store, "moderate")
    embedding = store.embedding_point[:]
    expect = [rows[moderate.moderate(embedding[rows], k)] for rows, k in classes(store, manifest)]
    assert manifest.indices.tolist() == torch.sort(torch.cat(expect)).values.tolist()


def test_d2_runs_message_passing_within_ccs_strata_of_forgetting_scores(store):
    manifest = chosen(store, "d2")
    embedding, expect, betas = store.embedding_point[:], [], []
    for rows, k in classes(store, manifest):
        s = scores.forgetting_events(store.correct(rows))
        betas.append(ccs.ccs_beta(k / len(rows)))
        for part, budget in ccs.ccs_strata(s, k, betas[-1], 25):
            expect.append(rows[part][d2.d2_select(embedding[rows[part]], s[part], budget)])
    assert manifest.indices.tolist() == torch.sort(torch.cat(expect)).values.tolist()
    params = manifest.method["params"]
    assert params["beta"] == betas and params["strata"] == 25 and params["score"] == "forgetting"
    assert abs(betas[0] - 0.4) < 0.01  # 10 % kept: the authors' mis-ratio 0.4


def test_dual_samples_by_beta_times_score_from_the_selection_stream(store):
    manifest = chosen(store, "dual", seed=2)
    generator, expect = random_streams.generator(2, "selection"), []
    for rows, k in classes(store, manifest):
        p = store.prob_label(rows)
        weights = dual.dual_weights(dual.dual_score(p), p.double().mean(1), k / len(rows))
        expect.append(rows[dual.dual_sample(weights, k, generator)])
    assert manifest.indices.tolist() == torch.sort(torch.cat(expect)).values.tolist()
    assert manifest.method["params"]["checkpoints"] == 3 and manifest.method["params"]["c_d"] == 4.0
    assert chosen(store, "dual", seed=5).indices.tolist() != manifest.indices.tolist()


def test_ccs_drops_the_hard_cutoff_before_its_strata(store):
    manifest = chosen(store, "ccs")
    stage = manifest.selection
    for c, (rows, k) in enumerate(classes(store, manifest)):
        beta = ccs.ccs_beta(k / len(rows))
        el2n = store.grad_logit[rows].double().norm(dim=2).mean(1)  # the stage's score over the M samples
        top = rows[torch.argsort(el2n, descending=True, stable=True)[: int(beta * len(rows))]]
        assert not set(top.tolist()) & set(manifest.indices.tolist())
        assert manifest.method["params"]["difficulty"]["cutoff"][c] == beta
        assert stage["dropped_cutoff"][c] + stage["dropped_hard"][c] >= len(top)
    assert method_class("ccs").default_difficulty == DifficultyConfig(strata=10)  # prune's stage, with beta


# ----------------------------------------------------------------------------- defaults, determinism, refusals


@pytest.mark.parametrize("name", FIELD)
def test_field_methods_skip_the_difficulty_stage_unless_asked(store, name):
    assert not method_class(name).default_difficulty.active
    staged = select(Candidates.from_store(store), MethodConfig(name), Budget(0.1), seed=0,
                    difficulty=method_class(name).difficulty(drop_hard="auto"))
    assert staged.method["params"]["difficulty"]["drop_hard"] == "auto" and len(staged) == 144


@pytest.mark.parametrize("name", FIELD)
def test_the_same_store_and_seed_give_the_same_manifest_byte_for_byte(store_path, tmp_path, name):
    for out in ("a.json", "b.json"):
        run("select", "--features", store_path, "--method", name, "--fraction", "0.1", "--seed", "7",
            "--out", tmp_path / out, "--quiet")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_keep_on_the_command_line_is_recorded_and_checked(store_path, tmp_path):
    run("select", "--features", store_path, "--method", "forgetting", "--keep", "easy", "--out", tmp_path / "e.json")
    assert '"keep": "easy"' in (tmp_path / "e.json").read_text()
    assert "craig ranks by no score: leave out --keep" in fails(
        "select", "--features", store_path, "--method", "craig", "--keep", "hard", "--out", tmp_path / "m.json")
    assert "forgetting reads the warm-up's checkpoints; leave out --posterior" in fails(
        "select", "--features", store_path, "--method", "forgetting", "--posterior", "point", "--out", tmp_path / "m.json")
    assert "kcenter reads the unperturbed warm weights' features only" in fails(
        "select", "--features", store_path, "--method", "kcenter", "--posterior", "mean", "--out", tmp_path / "m.json")
    with pytest.raises(PruneError, match="unknown keep 'middle'; choose easy or hard"):
        MethodConfig("el2n", keep="middle")


def test_dual_refuses_a_single_checkpoint():
    one = random_store()
    one.loss_per_epoch = one.loss_per_epoch[:, :1]
    with pytest.raises(PruneError, match="method dual reads 2 or more warm-up checkpoints"):
        method_class("dual")(one, MethodConfig("dual"), torch.device("cpu"))


@pytest.mark.parametrize("command", [["select", "--method", "dual"], ["bench", "--methods", "random,dual"]])
def test_dual_with_a_one_epoch_warm_up_is_refused_before_any_model_runs(tmp_path, monkeypatch, command):
    import prune.features.build

    def no_warm_up(*args, **kwargs):
        raise AssertionError("a model was warmed up before the request was checked")

    monkeypatch.setattr(prune.features.build, "warm_start", no_warm_up)
    output = fails(*command, "--warmup-epochs", "1", "--out", tmp_path / "out")
    assert "method dual reads 2 or more warm-up checkpoints (one per warm-up epoch), got T = 1" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_the_shared_checkpoint_pass_gathers_the_records_of_every_rank(tmp_path):
    """Under a 2-process torchrun the checkpoint pass at the initial weights (--warmup-epochs 0) is shared out;
    rank 0 writes every rank's p_y, margin and correctness: the one-process store's, byte for byte."""
    args = ["features", "--warmup-epochs", "0", "--posterior-samples", "1", "--batch-size", "256", "--quiet"]
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    run(*args, "--out", one)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([TORCHRUN, "--nproc-per-node", "2", "--standalone", "-m", "prune", *args, "--out", str(two)],
                   env=env, check=True, timeout=120, capture_output=True)
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        for name in ("prob_label_per_epoch", "margin_per_epoch", "correct_per_epoch"):
            assert np.array_equal(a[name][...], b[name][...]), name
        assert b["correct_per_epoch"][...].any() and not b["correct_per_epoch"][...].all()


@pytest.mark.parametrize("name", ["herding", "craig", "el2n", "kcenter", "dual"])
def test_a_method_that_reads_features_refuses_no_store(name):
    with pytest.raises(PruneError, match=f"method {name} needs features"):
        method_class(name)(None, MethodConfig(name), torch.device("cpu"))
