"""prune train refuses options that the mode chosen (static, --dynamic, the replay of a subset log) would
ignore, with one line and before any training (#28); prune.train refuses the same from Python (#27)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import prune
import prune.api
from prune.dynamic import DynamicConfig
from prune.errors import PruneError
from prune.training import ModelSpec, TrainConfig
from tests import cli
from tests.cli import run


def fails(*args) -> str:
    """The one `error:` line of `prune train ARGS` (exit 2, no traceback)."""
    output = cli.fails("train", *args)
    assert output.count("error: ") == 1, output
    return output.split("error: ")[1]


@pytest.fixture
def no_training(monkeypatch):
    """Any training run fails the test: every refusal comes first."""
    def trained(*args, **kwargs):
        raise AssertionError("a model was trained before the options were checked")

    for name in ("fit_and_test", "run_dynamic", "replay"):
        monkeypatch.setattr(prune.api, name, trained)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("manifest") / "m.json"
    run("select", "--method", "random", "--fraction", "0.1", "--out", path)
    return path


@pytest.fixture(scope="module")
def subset_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("log") / "log.json"
    run("train", "--dynamic", "random", "--epochs", "1", "--batch-size", "64", "--log", path)
    return path


@pytest.mark.parametrize("args, match", [
    (["--weighted"], "weighted training (--weighted) weights each example's loss by its manifest's gamma"),
    (["--every", "2"], "--every belongs to dynamic training; add --dynamic"),
    (["--subset-size", "64", "--tau", "0.1"], "--subset-size, --tau belong to dynamic training"),
    (["--update-rule", "crest"], "--update-rule belongs to dynamic training"),
    (["--posterior-sigma", "0.1"], "--posterior-sigma belongs to dynamic training"),
    (["--drop-hard", "0"], "--drop-hard belongs to dynamic training"),
    (["--log", "log.json"], "--log belongs to dynamic training"),
    (["--force"], "force (--force) uses a manifest or subset log"),
    (["--noise-seed", "3"], "--noise-seed seeds the label flips of --label-noise, which is 0 here"),
])
def test_static_training_refuses_what_it_would_ignore(args, match, no_training, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert match in fails(*args, "--epochs", "1")
    assert not list(tmp_path.iterdir())


def test_defaults_given_explicitly_are_accepted(tmp_path):
    metrics = tmp_path / "r.json"
    run("train", "--every", "1", "--tau", "0.05", "--no-weighted", "--epochs", "0", "--metrics", metrics)
    assert json.loads(metrics.read_text())["epochs"] == 0


@pytest.mark.parametrize("args, match", [
    (["--augment", "standard"], "--checkpoint, --save-model, --augment and --amp apply to static training"),
    (["--baseline", "random"], "--baseline random compares a manifest's subset with a random one"),
    (["--tau", "0.1"], "--tau is the threshold of --update-rule crest, not of every: drop it"),
    (["--update-rule", "crest", "--every", "2"], "--every applies to --update-rule every"),
    (["--learned-window", "3"], "--learned-window counts selections with a loss below --learned-loss"),
])
def test_a_dynamic_run_refuses_what_it_would_ignore(args, match, no_training):
    assert match in fails("--dynamic", "crest", *args, "--epochs", "1")


@pytest.mark.parametrize("args, match", [
    (["--learned-loss", "0.1"], "--dynamic random computes no losses"),
    (["--drop-hard", "0.1"], "--dynamic random has no difficulty stage"),
])
def test_dynamic_random_refuses_the_knobs_of_selection(args, match, no_training):
    assert match in fails("--dynamic", "random", *args, "--epochs", "1")


@pytest.mark.parametrize("args, match", [
    (["--epochs", "3", "--seed", "2"], "from the subset log: drop --epochs, --seed"),
    (["--weighted"], "from the subset log: drop --weighted"),
    (["--model", "mlp"], "from the subset log: drop --model"),
    (["--tau", "0.1"], "from the subset log: drop --tau"),
    (["--log", "again.json"], "a replay (--manifest LOG) writes none"),
    (["--amp"], "apply to static training"),
    (["--baseline", "random"], "--baseline random compares"),
    (["--dynamic", "crest"], "give one of them"),
    (["--label-noise", "0.1"], "records the labels it was made with"),
])
def test_a_replay_refuses_what_the_log_decides(args, match, subset_log, no_training):
    assert match in fails("--manifest", subset_log, *args)


def test_manifest_training_with_weights_and_force_is_accepted(manifest, tmp_path):
    metrics = tmp_path / "r.json"
    run("train", "--manifest", manifest, "--weighted", "--force", "--epochs", "1", "--metrics", metrics)
    record = json.loads(metrics.read_text())
    assert record["weighted"] is True and "weighted" not in record["train"] and record["train_examples"] == 144


def test_the_python_api_refuses_the_same_with_its_parameters(manifest, subset_log, no_training):
    data = prune.DataSpec("digits")
    with pytest.raises(PruneError, match=r"weighted training \(--weighted\)"):
        prune.train(data, TrainConfig(epochs=1, weighted=True))
    with pytest.raises(PruneError, match=r"force \(--force\)"):
        prune.train(data, force=True)
    with pytest.raises(PruneError, match="baseline random compares"):
        prune.train(data, baseline="random")
    with pytest.raises(PruneError, match="unknown baseline 'full'"):
        prune.train(data, manifest=manifest, baseline="full")
    with pytest.raises(PruneError, match="give one of them"):
        prune.train(data, DynamicConfig("crest"), manifest=manifest)
    with pytest.raises(PruneError, match="a dynamic run trains a fresh model"):
        prune.train(data, DynamicConfig("crest"), model=ModelSpec("mlp", checkpoint="c.pt"))
    with pytest.raises(PruneError, match="give no training config or model"):
        prune.train(manifest=subset_log, config=TrainConfig(epochs=1))
    with pytest.raises(PruneError, match="give no training config or model"):
        prune.train(manifest=subset_log, model="mlp")
    with pytest.raises(PruneError, match="no data source given"):
        prune.train(prune.DataSpec(None))
    with pytest.raises(PruneError, match="^tau is the threshold of update_rule crest"):
        DynamicConfig("crest", tau=0.5)


def test_python_trains_static_with_a_baseline_dynamic_and_replays(manifest, subset_log):
    result = prune.train(None, TrainConfig(epochs=1), manifest=manifest, baseline="random", seed=1)
    assert result.subset == "random" and result.baseline.subset == "random"
    assert result.difference == result.test_accuracy - result.baseline.test_accuracy
    assert result.record["baseline"]["train_examples"] == result.train_examples == 144
    assert result.record["manifest"] == str(manifest) and result.record["seed"] == 1
    dynamic = prune.train(prune.DataSpec("digits"), DynamicConfig("random", epochs=1, batch_size=64))
    assert dynamic.log["settings"]["kind"] == "random" and dynamic.backprops == round(0.1 * 1437)
    again = prune.train(manifest=dynamic.log)  # the log itself, as a dict
    assert again.history == dynamic.history and again.test_accuracy == dynamic.test_accuracy
    assert again.record["replayed"] is None
    replayed = prune.train(manifest=subset_log)
    assert replayed.record["replayed"] == str(subset_log) and replayed.record["dynamic"] == "random"
