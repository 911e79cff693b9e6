"""A smoke run of `prune bench` on digits: files written, cells resumed, table consistent."""

from __future__ import annotations

import json
from types import SimpleNamespace

import h5py
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
    half = 12.7062047 * abs(expected[0] - expected[1]) / 2  # t_{0.975,1} s / sqrt(2), s = |d0 - d1| / sqrt(2)
    assert craig["diff_ci_low"] == pytest.approx(craig["diff_mean"] - half)
    assert craig["diff_ci_high"] == pytest.approx(craig["diff_mean"] + half)
    assert craig["tie"] == (craig["diff_ci_low"] <= 0 <= craig["diff_ci_high"])
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("noise,method,fraction,seeds,") and "diff_ci_low" in summary[0]
    assert len(summary) == 1 + len(report["summary"])

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


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706),
                                          (10, 2.2281), (29, 2.0452), (100, 1.9840), (1000, 1.9623)])
def test_t_quantile_matches_the_tables(df, expected):
    from prune.bench import t_quantile

    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-5)


def test_t_quantile_other_levels_and_bad_input():
    from prune.bench import t_quantile

    assert t_quantile(0.95, 5) == pytest.approx(2.0150, abs=5e-5)
    assert t_quantile(0.995, 9) == pytest.approx(3.2498, abs=5e-5)
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12)
    assert t_quantile(0.975, 1) == pytest.approx(1 / __import__("math").tan(__import__("math").pi * 0.025))
    for p, df in ((0.975, 0), (0.975, 2.5), (1.0, 3), (0.3, 3)):
        with pytest.raises(ValueError):
            t_quantile(p, df)


def _rows(method_accuracies: dict, fraction=0.1, noise=0.0) -> list[dict]:
    return [{"method": method, "fraction": fraction, "noise": noise, "seed": seed, "test_accuracy": accuracy,
             "selection_seconds": 0.0, "train_seconds": 1.0}
            for method, accuracies in method_accuracies.items() for seed, accuracy in enumerate(accuracies)]


def test_paired_t_interval_decides_ties():
    """The interval is the paired one (differences seed by seed), not one from the two methods' spreads."""
    import numpy as np

    from prune.bench import summarise, t_interval

    random = [0.60, 0.70, 0.80, 0.65, 0.75]
    better = [a + d for a, d in zip(random, (0.010, 0.012, 0.011, 0.009, 0.010))]  # small but consistent
    noisy = [a + d for a, d in zip(random, (0.05, -0.04, 0.03, -0.05, 0.02))]
    summary = {s["method"]: s for s in summarise(_rows({"random": random, "better": better, "noisy": noisy}))}
    diffs = np.array(better) - np.array(random)
    half = 2.776445 * diffs.std(ddof=1) / np.sqrt(5)
    assert summary["better"]["diff_ci_low"] == pytest.approx(diffs.mean() - half)
    assert summary["better"]["diff_ci_high"] == pytest.approx(diffs.mean() + half)
    assert summary["better"]["tie"] is False and summary["better"]["diff_ci_low"] > 0
    assert summary["noisy"]["tie"] is True
    assert "tie" not in summary["random"] and summary["random"]["accuracy_ci_low"] == pytest.approx(
        t_interval(random)[0])
    assert t_interval([0.5]) is None


def test_one_seed_is_called_one_seed_not_a_tie(tmp_path):
    from prune.bench import BenchConfig, markdown_table, summarise

    summary = summarise(_rows({"random": [0.7], "craig": [0.72]}))
    craig = [s for s in summary if s["method"] == "craig"][0]
    assert craig["tie"] is None and craig["diff_ci_low"] is None and craig["accuracy_std"] is None
    table = markdown_table(summary, BenchConfig(dataset="digits", out=tmp_path, seeds=(0,)), "mlp")
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert "| craig | 72.00 (+2.00, one seed) |" in table and "| random | 70.00 (one seed) |" in table
    assert not any("± 0.00" in line or "tie" in line for line in rows)


def test_plot_is_a_png_with_one_panel_per_noise(tmp_path):
    from prune.bench import plot, summarise

    rows = [*_rows({"random": [0.6, 0.7, 0.65], "craig": [0.62, 0.71, 0.7]}, fraction=0.1),
            *_rows({"random": [0.8, 0.82, 0.81], "craig": [0.83, 0.84, 0.8]}, fraction=0.5),
            *_rows({"random": [0.5], "full": [0.9]}, fraction=0.1, noise=0.3)]
    for row in rows:
        if row["method"] == "full":
            row["fraction"] = 1.0
    path = tmp_path / "plot.png"
    plot(summarise(rows), path, title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    assert width >= 2 * 5.5 * 120 * 0.9  # two panels side by side


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
    # options no row of the grid reads are checked all the same
    (["--methods", "random", "--strata", "-3"], "--strata must be auto or a whole number >= 1"),
    (["--methods", "random", "--drop-hard", "7"], "--drop-hard must be auto or a fraction in [0, 1)"),
    (["--methods", "random", "--posterior-sigma", "nan"], "--posterior-sigma must be a finite number >= 0"),
    (["--methods", "random", "--posterior-samples", "0"], "--posterior-samples must be a whole number >= 1"),
    (["--methods", "random", "--warmup-epochs", "-1"], "--warmup-epochs must be a whole number >= 0"),
    (["--methods", "random", "--train-epochs", "-1"], "--train-epochs must be a whole number >= 0"),
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


def test_the_posterior_sigma_reaches_only_dyn_ensemble():
    """--posterior-sigma perturbs dyn-ensemble's posterior samples; crest and random select at the current weights
    and refuse it (prune.dynamic.DynamicConfig), so their cells are built without it."""
    from prune.bench import BenchConfig, _dynamic_config
    from prune.dynamic import DynamicConfig

    config = BenchConfig(dataset="digits", out=None, posterior_sigma=0.05)
    assert _dynamic_config(config, "ensemble", 0.1, 1000).posterior_sigma == 0.05
    for kind in ("crest", "random"):
        assert _dynamic_config(config, kind, 0.1, 1000).posterior_sigma == DynamicConfig.posterior_sigma


def test_augment_reaches_warm_up_and_training_and_names_its_own_cells(tmp_path, monkeypatch):
    """--augment standard is part of every cell's and store's settings; cells without it keep their names."""
    import prune.bench

    seen = []
    real = prune.bench.fit_and_test
    monkeypatch.setattr(prune.bench, "fit_and_test", lambda *a, **k: seen.append(a[2].augment) or real(*a, **k))
    out = tmp_path / "bench"

    def bench(*extra):
        result = CliRunner().invoke(app, ["bench", "--methods", "random,craig", "--fractions", "0.1", "--seeds", "0",
                                          "--no-full", "--warmup-epochs", "1", "--train-epochs", "1",
                                          "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    bench()
    assert "reused" not in bench("--augment", "standard", "--resume")
    assert seen == ["none", "none", "standard", "standard"]
    assert "reused 2 of 2 cells" in bench("--augment", "standard", "--resume")
    stores = [json.loads(h5py.File(path)["/"].attrs["features"]) for path in sorted((out / "stores").iterdir())]
    assert sorted(store["warmup"].get("augment", "none") for store in stores) == ["none", "standard"]


def test_amp_on_the_cpu_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--methods", "random", "--amp", "--device", "cpu",
                                      "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "--amp" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b").exists()
