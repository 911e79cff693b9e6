"""A smoke run of `prune bench` on digits: files written, cells resumed, table consistent."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from prune.cli import app


def test_bench_smoke_writes_reports_and_resumes(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--methods", "random,craig,ensemble", "--fractions", "0.1", "--seeds", "0,1",
            "--label-noise", "0,0.3", "--warmup-epochs", "1", "--train-epochs", "2", "--posterior-samples", "2",
            "--weighted", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("results.csv", "results.json", "results.md", "config.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "results.json").read_text())
    assert len(report["rows"]) == 2 * 2 * (3 + 2 + 1)  # noise x seeds x (methods + weighted + full reference)
    assert {r["method"] for r in report["rows"]} == {"full", "random", "craig", "craig+γ", "ensemble", "ensemble+γ"}
    craig = [s for s in report["summary"] if s["method"] == "craig" and s["noise"] == 0][0]
    assert craig["seeds"] == 2 and 0 <= craig["accuracy_mean"] <= 1
    assert "| craig |" in (out / "results.md").read_text()
    rows = {(r["method"], r["noise"], r["seed"]): r["test_accuracy"] for r in report["rows"]}
    expected = [rows[("craig", 0, s)] - rows[("random", 0, s)] for s in (0, 1)]
    assert abs(craig["diff_mean"] - sum(expected) / 2) < 1e-12 and craig["paired_seeds"] == 2
    assert craig["tie"] == (abs(craig["diff_mean"]) <= craig["diff_std"])

    cells = sorted((out / "cells").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    again = CliRunner().invoke(app, args + ["--resume"])
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in cells} == stamps  # nothing recomputed
    assert "reused 24 of 24 cells" in again.output


def test_bench_reuses_only_cells_and_stores_of_the_same_settings(tmp_path):
    """Another --warmup-epochs recomputes craig (its store changed) but reuses random; another
    --train-epochs reuses nothing; the tables hold only rows of the settings asked for."""
    out = tmp_path / "bench"

    def bench(*extra):
        result = CliRunner().invoke(app, ["bench", "--methods", "random,craig", "--fractions", "0.1", "--seeds", "0",
                                          "--no-full", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    bench("--warmup-epochs", "1", "--train-epochs", "1")
    assert "reused 1 of 2 cells" in bench("--warmup-epochs", "2", "--train-epochs", "1", "--resume")
    assert "reused 2 of 2 cells" in bench("--warmup-epochs", "2", "--train-epochs", "1", "--resume")
    assert "reused" not in bench("--warmup-epochs", "2", "--train-epochs", "2", "--resume")
    assert len(list((out / "cells").iterdir())) == 5 and len(list((out / "stores").iterdir())) == 2
    report = json.loads((out / "results.json").read_text())
    assert len(report["rows"]) == 2 and report["config"]["train_epochs"] == 2


def test_bench_refuses_an_existing_out_unless_resume_or_overwrite(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--methods", "random", "--fractions", "0.1", "--seeds", "0", "--no-full", "--train-epochs", "1",
            "--out", str(out)]
    refused = CliRunner().invoke(app, [*args, "--resume"])  # nothing to resume
    assert refused.exit_code == 2 and "no earlier run" in refused.output
    assert CliRunner().invoke(app, args).exit_code == 0
    cell = next((out / "cells").iterdir())
    before = cell.stat().st_mtime_ns
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "already exists" in refused.output and "--overwrite" in refused.output
    assert cell.stat().st_mtime_ns == before
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert cell.stat().st_mtime_ns != before  # recomputed


def test_bench_refuses_unknown_method(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--methods", "craig,nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "nope" in result.output


def test_bench_warms_up_once_per_noise_and_seed(tmp_path, monkeypatch):
    """craig (M = 1) and ensemble (M = 2) stores come from one warm-up, so their rows differ only in selection;
    craig-mean is craig with --posterior mean from the M = 2 store, which is ensemble."""
    import prune.bench
    from prune.features import FeatureStore

    calls = []
    real = prune.bench.warm_up
    monkeypatch.setattr(prune.bench, "warm_up", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "--methods", "craig,craig-mean,ensemble", "--fractions", "0.1", "--seeds", "0",
                                      "--warmup-epochs", "1", "--train-epochs", "1", "--posterior-samples", "2",
                                      "--no-full", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    one, two = (FeatureStore.open(next((out / "stores").glob(f"noise0-seed0-M{m}-*.h5"))) for m in (1, 2))
    assert torch.equal(one.grad_logit_ema[:], two.grad_logit_ema[:]) and torch.equal(one.loss_per_epoch[:], two.loss_per_epoch[:])
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"craig", "craig-mean", "ensemble"}
    assert rows["craig-mean"]["test_accuracy"] == rows["ensemble"]["test_accuracy"]


def test_dyn_crest_cells_run_crests_own_rule(monkeypatch):
    """dyn-crest is CREST (rho/tau re-selection, gamma weights; learned dropping off, as its code), not mini-batch CRAIG."""
    import prune.dynamic
    from prune.bench import BenchConfig, _dynamic_cell

    seen = []

    class Stop(Exception):
        pass

    def capture(data, cfg, **kwargs):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(prune.dynamic, "run_dynamic", capture)
    config = BenchConfig(dataset="digits", out=None)
    run = SimpleNamespace(data=None, labels=torch.zeros(1000, dtype=torch.int64), config=config, noise=0.0, seed=0,
                          grid=SimpleNamespace(model_name="mlp", device="cpu"))
    for kind in ("crest", "ensemble"):
        with pytest.raises(Stop):
            _dynamic_cell(run, kind, 0.1)
    crest, ensemble = seen
    assert (crest.update_rule, crest.weighted, crest.learned_loss) == ("crest", True, 0.0)  # as CREST's code
    assert (ensemble.update_rule, ensemble.weighted, ensemble.learned_loss) == ("every", False, 0.0)


def test_dyn_random_cells_do_not_depend_on_the_stage():
    """dyn-random has no difficulty stage, so its cells are keyed (and shared) alike for every --drop-hard."""
    from prune.bench import BenchConfig, _dynamic_config

    configs = [BenchConfig(dataset="digits", out=None, drop_hard=d) for d in (None, "0", "0.2")]
    assert len({_dynamic_config(c, "random", 0.1, 1000) for c in configs}) == 1
    assert len({_dynamic_config(c, "ensemble", 0.1, 1000) for c in configs}) == 3


@pytest.mark.parametrize("change, message", [
    (["--seeds", "0,0"], "--seeds lists 0 more than once"),
    (["--seeds", "1,0,1.5"], "--seeds must be comma-separated integers"),
    (["--methods", "random,random"], "--methods lists random more than once"),
    (["--fractions", "0.1,0.10"], "--fractions lists 0.1 more than once"),
    (["--label-noise", "0,0"], "--label-noise lists 0 more than once"),
    (["--methods", "herding,,random"], "has an empty item"),
    (["--fractions", "0.1,"], "has an empty item"),
    (["--dynamic", ",random"], "has an empty item"),
    (["--out", ""], "--out needs a folder name"),
    (["--out", " "], "--out needs a folder name"),
    (["--out", "FILE"], "is a file"),
    (["--out", "FILE", "--overwrite"], "is a file"),
    (["--out", "FILE", "--resume"], "is a file"),
])
def test_bench_refuses_bad_lists_and_outputs(tmp_path, monkeypatch, change, message):
    """Each is one line on stderr, exit 2, no traceback, and nothing written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("keep me\n")
    args = {"--methods": "random,herding", "--fractions": "0.1", "--seeds": "0,1", "--label-noise": "0",
            "--train-epochs": "1", "--out": str(tmp_path / "bench")}
    flags = []
    for i, key in enumerate(change):
        if key.startswith("--") and i + 1 < len(change) and not change[i + 1].startswith("--"):
            args[key] = change[i + 1]
        elif key.startswith("--"):
            flags.append(key)
    result = CliRunner().invoke(app, ["bench", *[x for kv in args.items() for x in kv], *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output and result.exception is None or \
        isinstance(result.exception, SystemExit)
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]
    assert (tmp_path / "FILE").read_text() == "keep me\n"
