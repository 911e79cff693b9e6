"""End to end through the CLI (Typer's runner) on scikit-learn digits and a Fashion-MNIST slice."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prune.cli import app
from prune.manifest import Manifest

runner = CliRunner()
FAST = ["--warmup-epochs", "2"]


def run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def fails(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    return result.output


def test_help_lists_commands():
    out = run("--help").output
    for command in ("select", "train", "inspect", "features"):
        assert command in out


def test_select_inspect_train_on_digits(tmp_path):
    manifest = tmp_path / "digits-craig.json"
    run("select", "--method", "craig", "--fraction", "0.1", *FAST, "--out", manifest)
    chosen = Manifest.load(manifest)
    assert len(chosen) == round(0.1 * 1437) == sum(chosen.per_class)
    dropped = sum(chosen.selection["dropped_hard"])  # the difficulty stage's drops stand for nothing
    assert 0 < dropped < 1437 - len(chosen)
    assert chosen.weights.sum() == 1437 - dropped  # gamma: every kept example is represented once
    assert "craig" in run("inspect", manifest).output
    metrics = tmp_path / "metrics.json"
    run("train", "--manifest", manifest, "--epochs", "15", "--metrics", metrics)
    result = json.loads(metrics.read_text())
    assert result["train_examples"] == 144 and len(result["history"]) == 15
    assert result["test_accuracy"] > 0.7  # 10 % of digits, 15 epochs of an MLP


def test_same_seed_gives_identical_manifest_bytes(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run("select", "--seed", "3", *FAST, "--out", a)
    run("select", "--seed", "3", *FAST, "--out", b)
    assert a.read_bytes() == b.read_bytes()
    chosen = Manifest.load(a)  # the default method: herding, after the difficulty stage
    assert chosen.method["name"] == "herding" and chosen.method["params"]["difficulty"]["drop_hard"] == "auto"
    assert chosen.weights.sum() == pytest.approx(1437 - sum(chosen.selection["dropped_hard"]))
    assert chosen.selection["similarity"].startswith("exp(-d^2")


def test_features_then_select_equals_one_step_and_runs_no_model(tmp_path, monkeypatch):
    store = tmp_path / "digits.h5"
    run("features", *FAST, "--posterior-samples", "2", "--out", store)
    one_step = tmp_path / "one.json"
    run("select", *FAST, "--posterior-samples", "2", "--method", "craig", "--out", one_step)

    import prune.models

    def no_model(*args, **kwargs):
        raise AssertionError("selection from a store must not build or run a model")

    monkeypatch.setattr(prune.models, "build_model", no_model)
    monkeypatch.setattr("prune.api.build_store", no_model)
    two_step = tmp_path / "two.json"
    run("select", "--features", store, "--method", "craig", "--out", two_step)
    assert one_step.read_bytes() == two_step.read_bytes()
    for method in ("random", "herding", "adacore", "lcmat", "ensemble", "crest"):
        run("select", "--features", store, "--method", method, "--fraction", "0.05", "--out", tmp_path / f"{method}.json")
        assert len(Manifest.load(tmp_path / f"{method}.json")) == round(0.05 * 1437)


def test_label_noise_is_recorded_and_used_by_train(tmp_path):
    manifest = tmp_path / "noisy.json"
    run("select", "--method", "random", "--label-noise", "0.3", "--noise-seed", "1", "--out", manifest)
    chosen = Manifest.load(manifest)
    assert len(chosen.label_noise["flipped"]) == round(0.3 * 1437)
    from prune.data import load_dataset

    clean = load_dataset("digits").train.y.numpy()
    noisy = chosen.training_labels(clean)
    assert (noisy != clean).sum() == len(chosen.label_noise["flipped"])


@pytest.mark.slow
def test_fashion_mnist_slice_craig_and_random(tmp_path, fashion_slice):
    source = f"npz:{fashion_slice}"
    accuracies = {}
    for method in ("random", "craig"):
        manifest = tmp_path / f"{method}.json"
        run("select", "--dataset", source, "--method", method, "--fraction", "0.2", "--model", "lenet",
            *FAST, "--out", manifest)
        metrics = tmp_path / f"{method}-metrics.json"
        run("train", "--manifest", manifest, "--epochs", "8", "--metrics", metrics)
        accuracies[method] = json.loads(metrics.read_text())["test_accuracy"]
    assert min(accuracies.values()) > 0.55, accuracies  # 400 images of 10 classes


def test_fashion_mnist_stores_are_byte_identical(tmp_path, fashion_slice):
    """Two uninterrupted runs write the same file. The per-example arrays are compressed with
    deflate: HDF5's LZF leaves its hash table uninitialised, so the same chunk could compress to
    different bytes (arrays equal, files not: seen on full Fashion-MNIST)."""
    import h5py

    stores = [tmp_path / "a.h5", tmp_path / "b.h5"]
    for store in stores:
        run("features", "--dataset", f"npz:{fashion_slice}", "--model", "lenet", "--warmup-epochs", "1",
            "--posterior-samples", "2", "--out", store)
    assert stores[0].read_bytes() == stores[1].read_bytes()
    with h5py.File(stores[0]) as file:
        assert {file[name].compression for name in file if file[name].ndim > 1 and file[name].chunks} == {"gzip"}


def test_user_errors_are_one_line_without_traceback(tmp_path):
    assert "Invalid value for '--method'" in fails("select", "--method", "nope")  # a typer choice
    assert "does not exist" in fails("inspect", tmp_path / "missing.json")
    assert "fraction" in fails("select", "--method", "random", "--fraction", "1.5")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not valid JSON" in fails("train", "--manifest", bad)


def test_difficulty_stage_options_reach_the_manifest(tmp_path):
    store = tmp_path / "digits.h5"
    run("features", *FAST, "--out", store)
    paper = tmp_path / "paper.json"
    run("select", "--features", store, "--method", "craig", "--drop-hard", "0", "--strata", "1", "--out", paper)
    chosen = Manifest.load(paper)
    assert "difficulty" not in chosen.method["params"] and chosen.weights.sum() == 1437  # CRAIG as published
    default = tmp_path / "default.json"
    run("select", "--features", store, "--method", "craig", "--out", default)
    assert Manifest.load(default).method["params"]["difficulty"] == {
        "drop_hard": "auto", "strata": "auto", "score": "el2n", "strata_budget": "proportional"}
    staged = tmp_path / "staged.json"
    run("select", "--features", store, "--method", "random", "--drop-hard", "0.2", "--strata", "3",
        "--difficulty-score", "loss", "--out", staged)
    chosen = Manifest.load(staged)
    assert chosen.method["params"]["difficulty"] == {"drop_hard": 0.2, "strata": 3, "score": "loss",
                                                     "strata_budget": "equal"}
    assert chosen.selection["dropped_hard"] == [int(0.2 * n) for n in chosen.dataset["class_counts"]]
    assert "--drop-hard must be auto or a fraction" in fails("select", "--features", store, "--drop-hard", "most",
                                                             "--out", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_flags_are_listed_as_on_off_pairs_without_a_type():
    """Only typer's own --help keeps its <bool>; every prune flag reads --x / --no-x."""
    for command in ("select", "features", "train", "inspect", "filter", "bench"):
        out = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert all("--help" in line for line in out.splitlines() if "<bool>" in line), out
    assert "--no-dry-run" in runner.invoke(app, ["select", "--help"], env={"COLUMNS": "200"}).output


def test_version_and_each_command_seed_help():
    from prune import __version__

    assert run("--version").output == f"prune {__version__}\n"
    helps = {command: " ".join(runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output.split())
             for command in ("select", "features", "train")}
    assert "Seed for warm-up, posterior draws and selection" in helps["select"]
    assert "Seed for the warm-up (initialisation, batch order) and the posterior draws" in helps["features"]
    assert "Seed for the model's initialisation and batch order" in helps["train"]


def test_quiet_turns_the_progress_bars_off(tmp_path, terminal):
    run("select", "--warmup-epochs", "1", "--out", tmp_path / "a.json")
    assert "warm-up" in terminal.getvalue() and "checkpoint 1" in terminal.getvalue()
    terminal.seek(0), terminal.truncate()
    run("select", "--warmup-epochs", "1", "--quiet", "--out", tmp_path / "b.json")
    assert terminal.getvalue() == ""
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_the_example_manifest_is_what_its_documented_command_writes(tmp_path, monkeypatch):
    import re
    import shlex
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "manifests"
    command = re.search(r"`SOURCE_DATE_EPOCH=(\d+) prune (select [^`]*)`", (folder / "README.md").read_text())
    args = shlex.split(command.group(2))
    assert args[args.index("--out") + 1] == "manifests/example-digits-craig-0.1.json"
    args[args.index("--out") + 1] = str(tmp_path / "example.json")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", command.group(1))
    run(*args)
    assert (tmp_path / "example.json").read_bytes() == (folder / "example-digits-craig-0.1.json").read_bytes()


def test_crest_says_what_it_dropped_as_learned_and_inspect_shows_it(tmp_path):
    store, manifest = tmp_path / "digits.h5", tmp_path / "crest.json"
    run("features", *FAST, "--out", store)
    out = run("select", "--features", store, "--method", "crest", "--learned-loss", "3", "--learned-window", "2",
              "--out", manifest).output
    dropped = Manifest.load(manifest).selection["dropped_learned"]
    assert len(dropped) == 10 and sum(dropped) > 0
    assert f"crest: dropped {sum(dropped)} examples as learned" in " ".join(out.split())
    shown = " ".join(runner.invoke(app, ["inspect", str(manifest)], env={"COLUMNS": "200"}).output.split())
    assert f"dropped: learned (crest) │ {sum(dropped)} examples ({', '.join(map(str, dropped))} per class)" in shown


def test_posterior_choice_reaches_the_manifest_and_inspect(tmp_path):
    store = tmp_path / "m2.h5"
    run("features", "--warmup-epochs", "1", "--posterior-samples", "2", "--posterior-layers", "fc", "--out", store)
    point, mean = tmp_path / "point.json", tmp_path / "mean.json"
    run("select", "--features", store, "--method", "craig", "--out", point)
    run("select", "--features", store, "--method", "craig", "--posterior", "mean", "--out", mean)
    assert Manifest.load(point).method["params"]["posterior"] == "point"
    assert Manifest.load(mean).method["params"]["posterior"] == "mean"
    assert "at the unperturbed warm weights" in run("inspect", point).output
    assert "mean over 2 posterior samples" in run("inspect", mean).output
    assert "computes none" in fails("select", "--features", store, "--method", "clean", "--posterior", "mean",
                                    "--out", tmp_path / "c.json")
    run("select", "--features", store, "--posterior", "mean", "--out", tmp_path / "h.json")  # herding, the default
    assert Manifest.load(tmp_path / "h.json").method["params"]["posterior"] == "mean"


def test_train_with_a_random_baseline_writes_both_results(tmp_path):
    import torch

    from prune.data import load_dataset
    from prune.selection import random_subset

    manifest, metrics = tmp_path / "m.json", tmp_path / "metrics.json"
    run("select", *FAST, "--out", manifest)
    out = run("train", "--manifest", manifest, "--baseline", "random", "--epochs", "3", "--metrics", metrics).output
    result, chosen = json.loads(metrics.read_text()), Manifest.load(manifest)
    baseline = result["baseline"]
    assert result["train_examples"] == baseline["train_examples"] == len(chosen)
    assert result["difference"] == result["test_accuracy"] - baseline["test_accuracy"]
    assert f"random {len(chosen)}" in out and f"{chosen.method['name']} - random: {100 * result['difference']:+.2f} points" in out
    labels = load_dataset("digits").train.y
    picked = random_subset(labels, chosen.per_class, 0)
    assert torch.bincount(labels[picked], minlength=10).tolist() == chosen.per_class
    assert not torch.equal(picked, random_subset(labels, chosen.per_class, 1))
    assert "--baseline random compares" in fails("train", "--baseline", "random", "--epochs", "1")


def test_train_on_all_data_with_label_noise(tmp_path):
    metrics = tmp_path / "metrics.json"
    run("train", "--label-noise", "0.2", "--noise-seed", "4", "--epochs", "1", "--metrics", metrics)
    assert json.loads(metrics.read_text())["label_noise"] == {"fraction": 0.2, "seed": 4}
    manifest = tmp_path / "m.json"
    run("select", "--method", "random", "--out", manifest)
    assert "records the labels it was made with" in fails("train", "--manifest", manifest, "--label-noise", "0.2")


def test_shell_completion_is_installable_and_completes_choices():
    assert "--install-completion" in run("--help").output
    env = {"_PRUNE_COMPLETE": "complete_bash", "COMP_WORDS": "prune select --method cr", "COMP_CWORD": "3"}
    done = runner.invoke(app, [], env=env, prog_name="prune")  # what the installed script asks `prune`
    assert done.exit_code == 0 and done.output.split() == ["craig", "crest"]
