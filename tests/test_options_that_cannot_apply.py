"""Options that cannot apply are refused, numbers too large are one line, and the papers' ablation
knobs sit in their own --help panel (issues 27 and 28).

``prune select --features S`` computes no features: every option of the model, warm-up, posterior
or label noise, and without --dataset every option of how to load data, is refused in one line
naming it (exit 2, no traceback, nothing written). The same holds for ``prune.select_coreset``.
"""

from __future__ import annotations

import os
import re

import pytest
from typer.testing import CliRunner

import prune
from prune.cli import app
from prune.errors import PruneError

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(result, *names: str) -> str:
    """The one ``error:`` line of a command that stopped with exit 2 and no traceback; it names ``names``."""
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.exception, result.output)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    line = " ".join(result.output[result.output.index("error:"):].split())  # rich's line wrapping undone
    for name in names:
        assert name in line, line
    return line


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A digits store: no warm-up, M = 2 (so lcmat, adacore and craig select from it at once)."""
    path = tmp_path_factory.mktemp("store") / "digits.h5"
    result = invoke("features", "--warmup-epochs", "0", "--posterior-samples", "2", "--out", path, "--quiet")
    assert result.exit_code == 0, result.output
    return path


COMPUTING = [["--model", "mlp"], ["--checkpoint", "weights.pt"], ["--warmup-epochs", "1"], ["--lr", "0.1"],
             ["--batch-size", "64"], ["--warmup-schedule", "constant"], ["--augment", "standard"], ["--amp"],
             ["--no-amp"], ["--posterior-samples", "4"], ["--posterior-sigma", "0.1"], ["--posterior-layers", "fc"],
             ["--posterior-kind", "seeds"], ["--hessian", "hutchinson"], ["--hutchinson-samples", "5"]]
LOADING = [["--data-root", "data"], ["--download"], ["--split", "train"], ["--image-column", "image"],
           ["--label-column", "label"], ["--feature-column", "x"], ["--image-size", "8"], ["--skip-bad"]]
LABELS = [["--label-noise", "0.3"], ["--noise-seed", "3"]]


@pytest.mark.parametrize("option", COMPUTING + LOADING + LABELS + [["--store", "kept.h5"]],
                         ids=lambda option: " ".join(option))
def test_options_that_compute_features_are_refused_with_a_store(option, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = option[0].replace("--no-", "--")  # an on/off option is named by its on form
    line = refused(invoke("select", "--features", store, "--method", "craig", *option, "--out", "m.json"), name)
    assert "drop " + name in line
    assert os.listdir(tmp_path) == []  # nothing written


def test_the_data_options_apply_with_dataset_and_a_store_alone_selects(store, tmp_path):
    """With --dataset the store is checked against that data, which the loading options describe; the
    store's own data needs neither."""
    refused(invoke("select", "--features", store, "--dataset", "digits", "--split", "train", "--out", tmp_path / "a.json"),
            "--split applies only to hf: datasets")  # digits' own refusal: the option was passed on
    assert invoke("select", "--features", store, "--dataset", "digits", "--method", "craig",
                  "--out", tmp_path / "b.json").exit_code == 0
    assert invoke("select", "--features", store, "--method", "craig", "--seed", "3", "--device", "cpu",
                  "--out", tmp_path / "c.json").exit_code == 0


@pytest.mark.parametrize("keywords", [{"lr": 0.1}, {"posterior_samples": 4}, {"model": "mlp"}, {"split": "train"},
                                      {"label_noise": 0.2}], ids=lambda keywords: next(iter(keywords)))
def test_select_coreset_refuses_them_too(keywords, store):
    dataset = "digits" if "split" not in keywords else None
    with pytest.raises(PruneError, match=re.escape("drop --" + next(iter(keywords)).replace("_", "-"))):
        prune.select_coreset(dataset, "craig", features=store, **keywords)


@pytest.mark.parametrize("sigma", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("command", [["features", "--out", "s.h5"], ["select", "--method", "craig", "--out", "m.json"]])
def test_a_posterior_sigma_that_is_not_a_finite_number_is_refused_even_with_one_sample(command, sigma, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    for samples in ("1", "4"):
        refused(invoke(*command, "--posterior-samples", samples, "--posterior-sigma", sigma),
                "--posterior-sigma must be a finite number >= 0")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("option, message", [
    (["--method", "adacore", "--hessian-batch", "1000000000000000000000000"], "--hessian-batch must be at most 2147483647"),
    (["--method", "lcmat", "--rho", "1e300"], "--rho must be at most 1e+06"),
    (["--method", "lcmat", "--rho", "1e38"], "--rho must be at most 1e+06"),
    (["--method", "craig", "--max-pool", "99999999999999999999"], "--max-pool must be at most 2147483647"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_numbers_too_large_are_one_line(option, message, store, tmp_path):
    refused(invoke("select", "--features", store, *option, "--out", tmp_path / "m.json"), message)
    assert os.listdir(tmp_path) == []


def test_the_largest_rho_and_hessian_batch_select(store, tmp_path):
    for option in (["--method", "lcmat", "--rho", "1e6"], ["--method", "adacore", "--hessian-batch", "2147483647"]):
        result = invoke("select", "--features", store, *option, "--out", tmp_path / f"{option[1]}.json")
        assert result.exit_code == 0, result.output


def _panels(command: str) -> dict[str, str]:
    """``prune COMMAND --help`` as {panel title: its text}."""
    text = runner.invoke(app, [command, "--help"], terminal_width=200, env={"COLUMNS": "200"}).output
    panels, title = {}, None
    for line in text.splitlines():
        heading = re.match(r"\s*╭─ (.+?) ─", line)
        if heading:
            title = heading[1]
            panels[title] = ""
        elif title is not None:
            panels[title] += line + "\n"
    return panels


ABLATIONS = {"select": ["--posterior-kind", "--hessian ", "--hutchinson-samples", "--top-k-scope", "--hessian-batch",
                        "--learned-window", "--learned-loss"],
             "features": ["--posterior-kind", "--hessian ", "--hutchinson-samples"]}


@pytest.mark.parametrize("command", sorted(ABLATIONS))
def test_the_papers_ablations_have_a_panel_of_their_own(command):
    panels = _panels(command)
    advanced = panels.pop("Advanced (papers' ablations)")
    for option in ABLATIONS[command]:
        assert option in advanced, option
        assert not any(option in text for text in panels.values()), option
    assert "[default: 5]" in panels["Model & warm-up"]  # the configs' defaults are still shown
    assert "[default: 4]" in panels["Posterior"] and "[default: gaussian]" in advanced


def test_the_help_of_posterior_and_method():
    method = " ".join(_panels("select")["Method"].split())
    assert "point; the default" not in method
    assert "mean for herding and ensemble" in method and "point for the others" in method
    assert "docs/methods.md" in method and "README" not in method
