"""Dynamic coreset training (prune.dynamic) and its subset log (prune.dynamic.subset_log) on scikit-learn digits."""

from __future__ import annotations

import copy
import json
import math
import re
from fractions import Fraction

import pytest
import torch
from typer.testing import CliRunner

from prune.cli import app
from prune.data import load_dataset
from prune.dynamic import DynamicConfig, plan_budget, replay, run_dynamic, state_equal, subset_log
from prune.errors import PruneError

CPU = torch.device("cpu")
SMALL = dict(fraction=0.1, epochs=4, batch_size=32, subset_size=96)
runner = CliRunner()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def run(data, **kwargs):
    cfg = DynamicConfig(**{**SMALL, **kwargs})
    return run_dynamic(data, cfg, model_name="mlp", seed=0, device=CPU)


@pytest.mark.parametrize("fraction,n,epochs,m", [(0.1, 1437, 20, 128), (0.1, 1437, 4, 32), (0.05, 1000, 7, 64),
                                                 (0.3, 101, 3, 7), (1, 50, 2, 16), (0.013, 60000, 20, 128)])
def test_budget_is_exact_and_steps_fit_the_batch(fraction, n, epochs, m):
    budget = plan_budget(fraction, n, epochs, m)
    assert budget.backprops == math.floor(Fraction(repr(fraction)) * n * epochs + Fraction(1, 2))
    assert sum(budget.epoch_backprops) == budget.backprops == sum(map(sum, budget.epoch_sizes))
    assert max(budget.epoch_backprops) - min(budget.epoch_backprops) <= 1  # f * n per epoch, up to rounding
    for sizes in budget.epoch_sizes:
        assert all(1 <= s <= m for s in sizes)
        assert len(sizes) == 1 or min(sizes) > 1


@pytest.mark.parametrize("kind,rule", [("ensemble", "every"), ("crest", "every"), ("crest", "crest"),
                                       ("random", "every")])
def test_loop_respects_budget_logs_and_replays_bit_exactly(digits, kind, rule):
    # the papers' algorithms as published: no difficulty stage (tested on its own below)
    result = run(digits, kind=kind, update_rule=rule, drop_hard=0,
                 **({"posterior_samples": 2} if kind == "ensemble" else {}))
    log = result.log
    budget = log["budget"]
    # the budget in backprops, counted
    assert result.backprops == budget["backprops"] == round(0.1 * 1437 * 4) == log["result"]["backprops"]
    assert sum(len(b) for _, _, b in subset_log.batches(log)) == budget["backprops"]
    subset_log.validate(json.loads(json.dumps(log)), source="test")
    # coresets: mini-batches of m, class-balanced within each subset, from the engine's weights
    for point in log["selections"]:
        for core in point["coresets"]:
            assert len(core["indices"]) == 32
            if kind != "random":
                assert sum(core["weights"]) == 96  # gamma: every example of V_p represented once
    if rule == "every":
        assert [p["epoch"] for p in log["selections"]] == [1, 2, 3, 4]
        assert all(len(p["coresets"]) == len(p["batches"]) for p in log["selections"])  # each coreset once
    assert result.test["accuracy"] > 0.5
    # replay: the same batches in the same order give the same weights, bit for bit (CPU)
    again = replay(log, digits, device=CPU)
    assert state_equal(again.model, result.model)
    assert again.history == result.history and again.backprops == result.backprops


def test_same_seed_same_subsets(digits):
    a = run(digits, kind="crest", epochs=2)
    b = run(digits, kind="crest", epochs=2)
    assert json.dumps(a.log) == json.dumps(b.log)  # no timings in the log
    assert len(a.timings["selection_point_seconds"]) == a.log["result"]["selections"]


def test_cli_dynamic_with_label_noise_writes_the_same_log_twice(tmp_path):
    from prune.data import flip_labels

    args = ["train", "--dynamic", "crest", "--label-noise", "0.2", "--noise-seed", "3", "--epochs", "2",
            "--batch-size", "32", "--subset-size", "64"]
    for name in ("a", "b"):
        result = runner.invoke(app, [*args, "--log", str(tmp_path / f"{name}.json"),
                                     "--metrics", str(tmp_path / f"{name}-metrics.json")])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    digits = load_dataset("digits")
    _, flipped = flip_labels(digits.train.y, 0.2, digits.num_classes, 3)
    assert subset_log.load(tmp_path / "a.json")["label_noise"]["flipped"] == flipped.tolist()
    metrics = json.loads((tmp_path / "a-metrics.json").read_text())
    assert metrics["label_noise"] == {"fraction": 0.2, "seed": 3} and metrics["selection_seconds"] > 0


def test_ensemble_differs_from_crest_and_uses_posterior_samples(digits):
    ens = run(digits, kind="ensemble", epochs=1, posterior_samples=3, posterior_sigma=0.5)
    crest = run(digits, kind="crest", epochs=1)
    assert ens.log["settings"]["posterior_samples"] == 3
    assert ens.log["settings"]["posterior_layers_used"] == "fc"  # the MLP has no BatchNorm
    # same subsets V_p (same seed stream), different distances -> different coresets
    assert ens.log["selections"][0]["coresets"] != crest.log["selections"][0]["coresets"]


def test_crest_rule_reselects_when_tau_is_tiny_and_not_when_huge(digits):
    tiny = run(digits, kind="crest", update_rule="crest", tau=1e-9)
    huge = run(digits, kind="crest", update_rule="crest", tau=1e9)
    assert tiny.log["checks"] and all(c["reselect"] for c in tiny.log["checks"])
    assert len(tiny.log["selections"]) == len(tiny.log["checks"]) + 1
    assert {p["reason"] for p in tiny.log["selections"][1:]} == {"rho"}
    assert len(huge.log["selections"]) == 1 and huge.log["checks"]
    assert not any(c["reselect"] for c in huge.log["checks"])
    for result in (tiny, huge):
        assert result.backprops == result.log["budget"]["backprops"]
        assert all(c["rho"] >= 0 and math.isfinite(c["rho"]) for c in result.log["checks"])


def test_dropping_learned_examples_shrinks_the_candidates(digits):
    result = run(digits, kind="crest", epochs=6, learned_loss=50.0, learned_window=1)  # every loss counts as learned
    sizes = [p["candidates"] for p in result.log["selections"]]
    assert sizes[0] == 1437 and min(sizes[1:]) < 1437
    assert result.backprops == result.log["budget"]["backprops"]


@pytest.mark.parametrize("kwargs,needle", [
    (dict(kind="nope"), "unknown kind 'nope'"),
    (dict(kind="crest", update_rule="sometimes"), "unknown update_rule"),
    (dict(kind="crest", posterior_samples=4), "M = 1"),
    (dict(kind="ensemble", posterior_samples=1), "kind ensemble needs posterior_samples >= 2"),
    (dict(kind="crest", subset_size=16), "subset_size (16) must be at least batch_size"),
    (dict(kind="random", fraction=0), "fraction must be in"),
    (dict(kind="random", fraction=1.5), "fraction must be in"),
    (dict(kind="random", every=0), "every must be a whole number"),
    (dict(kind="crest", tau=-1.0), "tau must be a finite number"),
    (dict(kind="random", fraction=0.0001), "less than one backprop"),
    (dict(kind="crest", posterior_sigma=0.1), "posterior_sigma sets the weight perturbations of kind ensemble"),
    (dict(kind="random", posterior_layers="fc"), "posterior_layers sets the weight perturbations"),
    (dict(kind="crest", posterior_sigma=0.1, posterior_layers="all"), "posterior_sigma and posterior_layers set"),
])
def test_bad_options_raise_prune_error(digits, kwargs, needle):
    """Named as a Python caller names them (the parameters; the command line's message says the flags)."""
    with pytest.raises(PruneError, match=re.escape(needle)) as err:
        run(digits, **kwargs)
    assert "--" not in str(err.value)


def test_validate_rejects_tampered_logs(digits):
    log = json.loads(json.dumps(run(digits, kind="random", epochs=1).log))
    bad = copy.deepcopy(log)
    outside = next(i for i in range(1437) if i not in bad["selections"][0]["coresets"][0]["indices"])
    bad["selections"][0]["batches"][0][0] = outside
    bad["selections"][0]["batch_coresets"][0] = 0
    with pytest.raises(PruneError, match="not in its coreset"):
        subset_log.validate(bad, source="t")
    bad = copy.deepcopy(log)
    bad["budget"]["backprops"] += 1
    with pytest.raises(PruneError, match="backprops"):
        subset_log.validate(bad, source="t")
    bad = copy.deepcopy(log)
    bad["schema"] = "prune.subsets/9"
    with pytest.raises(PruneError, match="schema"):
        subset_log.validate(bad, source="t")


def test_cli_train_log_replay_inspect(tmp_path):
    log, metrics, again = tmp_path / "dyn.json", tmp_path / "m.json", tmp_path / "m2.json"
    common = ["--epochs", "3", "--batch-size", "32", "--subset-size", "64"]
    result = runner.invoke(app, ["train", "--dynamic", "ensemble", "--posterior-samples", "2", "--fraction", "0.1",
                                 *common, "--log", str(log), "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    first = json.loads(metrics.read_text())
    assert first["backprops"] == round(0.1 * 1437 * 3) and first["full_data_backprops"] == 1437 * 3
    assert subset_log.is_subset_log(log) and subset_log.load(log)["settings"]["kind"] == "ensemble"
    result = runner.invoke(app, ["train", "--manifest", str(log), "--metrics", str(again)])
    assert result.exit_code == 0, result.output
    second = json.loads(again.read_text())
    assert second["test_accuracy"] == first["test_accuracy"] and second["history"] == first["history"]
    plot = tmp_path / "counts.png"
    result = runner.invoke(app, ["inspect", str(log), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "selection points" in result.output and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["inspect", str(log)])
    assert result.exit_code == 0 and not (tmp_path / "dyn.counts.png").exists()  # no plot unless asked (--plot)


@pytest.mark.parametrize("args,needle", [
    (["--fraction", "0.1"], "--dynamic"),
    (["--dynamic", "crest", "--posterior-samples", "3"], "M = 1"),
    (["--dynamic", "sometimes"], "--dynamic"),
])
def test_cli_bad_options_are_one_line(args, needle):
    result = runner.invoke(app, ["train", "--epochs", "1", *args])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


def test_bench_reports_dynamic_cells(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--methods", "random", "--dynamic", "crest,random", "--fractions", "0.1", "--seeds", "0",
            "--warmup-epochs", "1", "--train-epochs", "1", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in report["rows"]} == {"full", "random", "dyn-crest", "dyn-random"}
    assert "| dyn-crest |" in (out / "results.md").read_text()
    bad = runner.invoke(app, ["bench", "--dynamic", "nope", "--out", str(tmp_path / "b2")])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_noisy_labels_are_logged_and_replayed(digits):
    from prune.data import flip_labels

    noisy, flipped = flip_labels(digits.train.y, 0.2, digits.num_classes, 0)
    cfg = DynamicConfig(kind="random", **{**SMALL, "epochs": 2})
    result = run_dynamic(digits, cfg, model_name="mlp", seed=0, device=CPU, labels=noisy)
    assert result.log["label_noise"]["flipped"] == flipped.tolist()
    subset_log.validate(result.log, source="t")
    assert state_equal(replay(result.log, digits, device=CPU).model, result.model)


def test_difficulty_stage_leaves_out_what_the_current_model_misclassifies(digits):
    """With drop_hard auto each coreset comes from the examples of V_p whose label the current
    posterior mean believes at least as much as chance, topped up with the least hard to fill m."""
    result = run(digits, kind="ensemble", posterior_samples=2)  # on by default
    off = run(digits, kind="ensemble", posterior_samples=2, drop_hard=0)
    assert result.log["settings"]["drop_hard"] == "auto" and off.log["result"]["dropped_hard"] == 0
    dropped = result.log["result"]["dropped_hard"]
    assert 0 < dropped < result.log["selections"][0]["subsets"] * 4 * 96
    for point in result.log["selections"]:
        for core in point["coresets"]:
            assert len(core["indices"]) == 32 and sum(core["weights"]) <= 96  # gamma: kept examples only
    assert result.log["selections"] != off.log["selections"]


def test_progress_shows_steps_and_coresets_done_of_planned_on_a_terminal(digits, terminal):
    result = run(digits, kind="crest", epochs=2)
    steps, shown = result.log["budget"]["steps"], terminal.getvalue()
    assert f"{steps}/{steps}" in shown and "epoch 2/2" in shown  # training steps done / planned
    last = result.log["selections"][-1]
    assert f"{last['subsets']}/{last['subsets']}" in shown and f"selection point {len(result.log['selections'])}" in shown
    terminal.seek(0), terminal.truncate()
    replay(result.log, digits, device=CPU)
    assert f"{steps}/{steps}" in terminal.getvalue()
