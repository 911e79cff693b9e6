"""A new user's papercuts (issue 28, part B): what the commands print in a log or a pipe (labelled, one line
per phase), the seconds they report, options that cannot apply, and the public names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import prune
from tests.cli import fails, run

EXAMPLE = Path(__file__).resolve().parent.parent / "manifests" / "example-digits-craig-0.1.json"


def lines(output: str, start: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(start)]


# ----------------------------------------------------------------------------- prune train --baseline random


def test_the_baseline_run_and_the_manifests_are_labelled_and_say_what_they_measure():
    out = run("train", "--manifest", EXAMPLE, "--baseline", "random", "--epochs", "2")
    craig, baseline = lines(out, "craig subset: "), lines(out, "random baseline: ")
    assert craig[0] == "craig subset: 2 epochs on 144 examples (4 steps) ..."
    assert craig[1] == "craig subset: epoch 1/2" + craig[1].split("epoch 1/2")[1]
    assert all(line.endswith("(on the training subset)") for line in craig[1:3] + baseline[1:3])
    assert re.fullmatch(r"craig subset: done, 4/4 steps in \d+\.\d s", craig[3])
    assert baseline[0] == "random baseline: 2 epochs on 144 examples (4 steps) ..." and len(baseline) == 4
    assert out.index(craig[-1]) < out.index(baseline[0])  # one block, then the other
    header = out[out.index("prune train"):out.index("craig 144")]
    assert re.search(r"training\s.*seconds", header, re.S)  # the column says what it times


def test_the_seconds_leave_start_up_out(monkeypatch):
    """Building the model and the first optimizer (torch.optim imports torch._dynamo: seconds) happen before the
    clock starts, for the manifest's run and the baseline's alike."""
    import prune.training as training

    clock = [0.0]

    def costs(seconds, original):
        def slow(*args, **kwargs):
            clock[0] += seconds
            return original(*args, **kwargs)
        return slow

    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(torch.optim.SGD, "__init__", costs(100, torch.optim.SGD.__init__))
    monkeypatch.setattr(training.ModelSpec, "build", costs(10, training.ModelSpec.build))
    result = prune.train(None, prune.TrainConfig(epochs=1), manifest=EXAMPLE, baseline="random")
    assert clock[0] >= 220  # the start-up was paid (twice), outside the timed region
    assert result.wall_seconds == 0 and result.baseline.wall_seconds == 0
    assert result.record["wall_seconds"] == result.record["baseline"]["wall_seconds"] == 0


# ----------------------------------------------------------------------------- progress in a log or a pipe


def test_select_prints_one_line_per_phase_when_not_on_a_terminal(tmp_path):
    out = run("select", "--warmup-epochs", "1", "--out", tmp_path / "m.json")  # captured: not a terminal
    assert lines(out, "loading digits") == ["loading digits ...", lines(out, "loading digits: done")[0]]
    assert lines(out, "warm-up: ")[0] == "warm-up: 1 epoch on 1,437 examples (12 steps) ..."
    assert re.fullmatch(r"warm-up: done, 12/12 steps in \d+\.\d s", lines(out, "warm-up: ")[-1])
    for phase in ("features 1/4", "features (unperturbed)", "difficulty scores", "select herding"):
        started, done = lines(out, phase + ":")  # two lines each, none per step
        assert started.endswith(" ...") and re.search(r": done, [\d,]+/[\d,]+.* in \d+\.\d s$", done), (started, done)
    # each line says what it counts: the greedy's pools (one per class), the passes' examples
    assert lines(out, "select herding:")[0] == "select herding: 10 pools ..."
    assert re.fullmatch(r"select herding: done, 10/10 pools in \d+\.\d s", lines(out, "select herding:")[1])
    assert lines(out, "features 1/4:")[0] == "features 1/4: 1,437 examples ..."
    assert re.fullmatch(r"features 1/4: done, 1,437/1,437 examples in \d+\.\d s", lines(out, "features 1/4:")[1])
    assert "total " not in out
    # the warm-up's checkpoint pass is one line inside the warm-up's: its start would say nothing new
    assert [re.sub(r"\d+\.\d s", "S", line) for line in lines(out, "checkpoint")] == [
        "checkpoint 1: done, 1,437 examples in S"]
    quiet = run("select", "--warmup-epochs", "1", "--out", tmp_path / "q.json", "--quiet")
    assert "..." not in quiet and "done" not in quiet


def test_dynamic_training_prints_its_start_and_end(tmp_path):
    out = run("train", "--dynamic", "random", "--epochs", "2", "--batch-size", "64", "--subset-size", "64")
    training = lines(out, "dynamic random: ")
    assert training[0].startswith("dynamic random: 2 epochs, ") and training[0].endswith(" examples ...")
    assert len(training) == 4 and training[-1].startswith("dynamic random: done, ")  # start, 2 epochs, end
    assert "coresets:" not in out  # the selection points' task prints nothing of its own


def test_a_task_prints_its_start_and_end_and_nothing_per_step(capsys):
    from rich.markup import escape

    from prune.training import console, phase, progress

    assert not console.is_terminal
    with progress() as bars:
        task = bars.add_task("pass", total=1000, status="", unit="rows")
        for _ in range(1000):
            bars.advance(task)
        bars.add_task("other", total=3, status="", lines=False)
        short = bars.add_task("short", total=5, status="", unit="rows", lines="done")
        bars.update(short, advance=5)
    with phase(escape("loading [x]")):  # rich markup, as the bars' descriptions: quoted files are escaped
        pass
    with pytest.raises(RuntimeError), progress() as bars:  # a failure says so itself: no "done"
        bars.add_task("broken", total=2, status="")
        raise RuntimeError
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == ["pass: 1,000 rows ...", err[1]] and re.fullmatch(r"pass: done, 1,000/1,000 rows in \d+\.\d s",
                                                                        err[1])
    assert re.fullmatch(r"short: done, 5 rows in \d+\.\d s", err[2])  # lines="done": the end's line only
    assert err[3] == "loading [x] ..." and err[4].startswith("loading [x]: done in ")
    assert err[5:] == ["broken: total 2 ..."]


# ----------------------------------------------------------------------------- options that cannot apply


@pytest.mark.parametrize("kind", ["crest", "random"])
def test_the_ensembles_perturbation_is_refused_where_no_weights_are_perturbed(kind):
    message = fails("train", "--dynamic", kind, "--posterior-sigma", "0.1", "--posterior-layers", "fc")
    assert ("--posterior-sigma and --posterior-layers set the weight perturbations of --dynamic ensemble's "
            f"posterior samples; --dynamic {kind} ") in message and message.endswith(": drop them")


# ----------------------------------------------------------------------------- public names


def test_model_spec_is_public_and_trains_from_a_checkpoint(tmp_path):
    import prune.api
    from prune.training import ModelSpec

    assert "ModelSpec" in prune.__all__ and prune.ModelSpec is ModelSpec
    light = subprocess.run([sys.executable, "-c", "import sys, prune; assert 'torch' not in sys.modules; "
                            "print(prune.ModelSpec.__name__)"], capture_output=True, text=True, check=True)
    assert light.stdout == "ModelSpec\n"
    data = prune.DataSpec("digits")
    first = prune.train(data, prune.TrainConfig(epochs=1), manifest=EXAMPLE)
    torch.save(first.model.state_dict(), tmp_path / "mlp.pt")
    tuned = prune.train(data, prune.TrainConfig(epochs=0), manifest=EXAMPLE,
                        model=prune.ModelSpec("mlp", checkpoint=tmp_path / "mlp.pt"))
    assert tuned.test_accuracy == first.test_accuracy  # no epoch: the checkpoint's weights, tested
    assert "ModelSpec" in prune.api.__doc__ and "checkpoint" in prune.api.__doc__
