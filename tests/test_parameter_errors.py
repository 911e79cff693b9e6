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
