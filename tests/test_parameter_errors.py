"""Errors name what the caller wrote (issue 28, part B): a Python caller reads the configs' parameters
(``fraction``), the command line its flags (``--fraction``), in messages otherwise the same."""

from __future__ import annotations

import pickle

import pytest

import prune
from prune.errors import PruneError
from tests.cli import fails


def test_a_budget_names_fraction_to_python_and_the_flag_to_the_command_line():
    with pytest.raises(PruneError) as error:
        prune.Budget(fraction=2)
    assert str(error.value) == "fraction must be in (0, 1], got 2; e.g. fraction 0.1 keeps 10%"
    assert "error: --fraction must be in (0, 1], got 2.0; e.g. --fraction 0.1 keeps 10%" in fails(
        "select", "--fraction", "2", "--method", "random")
    with pytest.raises(PruneError, match="^count must be at least 1, got 0$"):
        prune.Budget(count=0)
    with pytest.raises(PruneError, match="^give exactly one of fraction or count"):
        prune.Budget(fraction=0.1, count=3)


def test_the_forms_survive_pickling_and_plain_errors_keep_their_flags():
    error = PruneError("--dynamic ensemble needs --posterior-samples >= 2", parameters={"--dynamic": "kind"})
    assert str(error) == "kind ensemble needs posterior_samples >= 2"
    again = pickle.loads(pickle.dumps(error))  # torchrun carries errors between processes
    assert (str(again), again.cli_message) == (str(error), error.cli_message)
    plain = PruneError("--out exists; pass --overwrite")  # the command line's own checks keep their flags
    assert str(plain) == plain.cli_message == "--out exists; pass --overwrite"


@pytest.mark.parametrize("make, message", [
    (lambda: prune.TrainConfig(epochs=1, batch_size=0), "batch_size must be a whole number >= 1, got 0"),
    (lambda: prune.TrainConfig(epochs=1, lr=-1), "lr must be a finite number >= 0, got -1"),
    (lambda: prune.TrainConfig(epochs=1, augment="x"), "unknown augment 'x'"),
    (lambda: prune.DynamicConfig("nope"), "unknown kind 'nope'"),
    (lambda: prune.DynamicConfig("crest", subset_size=16), "subset_size (16) must be at least batch_size (128)"),
    (lambda: prune.DynamicConfig("crest", tau=0.5), "tau is the threshold of update_rule crest"),
    (lambda: prune.DifficultyConfig(drop_hard=2), "drop_hard must be auto or a fraction in [0, 1), got 2"),
    (lambda: prune.DifficultyConfig(score="x"), "unknown score 'x'"),
    (lambda: prune.DifficultyConfig(strata_budget="x"), "unknown strata_budget 'x'"),
])
def test_the_training_dynamic_and_difficulty_configs_name_their_parameters(make, message):
    with pytest.raises(PruneError) as error:
        make()
    assert str(error.value).startswith(message) and "--" not in str(error.value), str(error.value)


def test_the_command_line_still_names_the_flags():
    assert "error: --batch-size must be a whole number >= 1, got 0" in fails("train", "--batch-size", "0")
    assert "error: --subset-size (16) must be at least --batch-size (128)" in fails("train", "--dynamic", "crest",
                                                                                    "--subset-size", "16")
    assert "error: --drop-hard must be auto or a fraction in [0, 1)" in fails("select", "--drop-hard", "2")


@pytest.mark.parametrize("make, message", [
    (lambda: prune.MethodConfig("herding", rho=-1), "rho must be a finite number >= 0, got -1"),
    (lambda: prune.MethodConfig("herding", max_pool=0), "max_pool must be a whole number >= 1, got 0"),
    (lambda: prune.MethodConfig("nope"), "unknown method 'nope'"),
    (lambda: prune.MethodConfig("random", posterior="point"), "posterior chooses the features"),
    (lambda: prune.MethodConfig("ensemble").check_samples(1),
     "method ensemble needs posterior samples, got PosteriorConfig.samples 1; add PosteriorConfig.samples 4"),
    (lambda: prune.MethodConfig("dual").check_checkpoints(1), "use WarmupConfig.epochs 2 or more"),
    (lambda: prune.WarmupConfig(epochs=-1), "epochs must be a whole number >= 0, got -1"),
    (lambda: prune.WarmupConfig(lr=-1), "lr must be a finite number >= 0, got -1"),
    (lambda: prune.PosteriorConfig(samples=0), "samples must be a whole number >= 1, got 0"),
    (lambda: prune.PosteriorConfig(sigma=-1), "sigma must be a finite number >= 0, got -1"),
    (lambda: prune.PosteriorConfig(layers="x"), "unknown layers 'x'"),
    (lambda: prune.PosteriorConfig(hutchinson_samples=0), "hutchinson_samples must be a whole number >= 1"),
    (lambda: prune.DataSpec(""), "source must name a data source, got ''"),
    (lambda: prune.DataSpec(label_noise=1), "label_noise fraction must be in [0, 1), got 1"),
    (lambda: prune.DataSpec(noise_seed=3), "noise_seed seeds the label flips of label_noise, which is 0 here"),
    (lambda: prune.DataSpec(label_noise=0.1, noise_seed=-1), "noise_seed must be an integer from 0 to 4294967295"),
    (lambda: prune.DataSpec(None).load(), "no data source given: name one (source)"),
    (lambda: prune.select_coreset("digits", "random", seed=-1), "seed must be an integer from 0 to 4294967295"),
])
def test_the_method_warmup_posterior_and_data_configs_name_their_parameters(make, message):
    with pytest.raises(PruneError) as error:
        make()
    assert message in str(error.value) and "--" not in str(error.value), str(error.value)


def test_the_feature_config_names_its_parameters():
    from prune.features import FeatureConfig

    warmup = prune.TrainConfig(epochs=1)
    with pytest.raises(PruneError, match="^unknown dtype 'x'"):
        FeatureConfig("mlp", warmup, dtype="x")
    with pytest.raises(PruneError, match="^batch_size must be a whole number >= 1, got 0$"):
        FeatureConfig("mlp", warmup, batch_size=0)


@pytest.mark.parametrize("args, message", [
    (["select", "--method", "lcmat", "--rho", "-1"], "error: --rho must be a finite number >= 0, got -1.0"),
    (["select", "--warmup-epochs", "-1"], "error: the number of epochs must be a whole number >= 0, got -1"),
    (["select", "--posterior-samples", "0"], "error: --posterior-samples must be a whole number >= 1, got 0"),
    (["select", "--posterior-sigma", "-1"], "error: --posterior-sigma must be a finite number >= 0, got -1.0"),
    (["select", "--dataset", ""], "error: --dataset needs a source name, got ''"),
    (["select", "--noise-seed", "3"], "error: --noise-seed seeds the label flips of --label-noise, which is 0 here"),
    (["select", "--method", "ensemble", "--posterior-samples", "1"],
     "error: method ensemble needs posterior samples, got --posterior-samples 1; add --posterior-samples 4"),
    (["select", "--method", "dual", "--warmup-epochs", "1"], "use --warmup-epochs 2 or more"),
])
def test_the_command_line_still_names_the_flags_of_these_configs(args, message):
    assert message in fails(*args, "--dry-run")
