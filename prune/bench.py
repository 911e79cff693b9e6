"""`prune bench`: the papers' evaluation protocol on the user's data (methods.md, "Evaluation protocol").

For every (label noise, seed): warm up once and write a feature store (a second one with M
posterior samples, from the same warm-up, when ``ensemble`` or a ``<method>-mean`` row is asked
for: ``craig-mean``, ``adacore-mean``, ... select with ``--posterior mean``, beside the method's
own row at the unperturbed weights, which equal those of the M = 1 store), select every method
at every fraction from it (each with its default difficulty stage unless ``drop_hard``/``strata``
say otherwise),
train a fresh model per cell and test it; train once on the full (noisy) data as the
reference row (``full=False`` skips it). Every cell is written to ``OUT/cells/`` as soon as it
is done, named by a hash of every setting that produced it (stores in ``OUT/stores/`` too), so
a resumed run reuses exactly the cells with the same settings and recomputes the rest.
Aggregates: ``results.csv`` (one row per cell), ``summary.csv``, ``results.json`` and
``results.md``: the accuracy over seeds (mean ± std), and the paired difference to ``random``
trained on the same seed (same warm-up, same training seed), its mean and 95 % confidence
interval from the paired t distribution; a tie when the interval contains 0, "one seed" when
only one seed was paired. ``results.png``: test accuracy vs fraction, one line per method (the
mean, with its 95 % t interval as error bars), one panel per noise level.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from prune.atomic import atomic_path, write_text
from prune.data import LoadedData, flip_labels, load_dataset
from prune.errors import PruneError
from prune.features import FeatureConfig, FeatureStore, PosteriorConfig, TrainingLabels, build_store, warm_up
from prune.models import default_model
from prune.selection import (METHODS, Budget, Candidates, DifficultyConfig, MethodConfig, check_request, method_class,
                             select)
from prune.selection.methods import POSTERIORS, REGISTRY
from prune.training import TrainConfig, TrainingRows, check_amp, check_seed, console, fit_and_test


def method_posterior(name: str) -> tuple[str, str | None]:
    """A --methods entry as (method, posterior): ``craig-mean`` is craig with ``--posterior mean``,
    ``herding-point`` herding with ``--posterior point`` (each only where it is not the default)."""
    base, _, posterior = name.rpartition("-")
    if base in REGISTRY and REGISTRY[base].needs_features and posterior in POSTERIORS \
            and REGISTRY[base].default_posterior != posterior:
        return base, posterior
    return name, None


@dataclass(frozen=True)
class BenchConfig:
    dataset: str
    out: Path
    data_root: str | None = None
    methods: tuple[str, ...] = ("random", "craig")
    fractions: tuple[float, ...] = (0.1,)
    label_noise: tuple[float, ...] = (0.0,)
    seeds: tuple[int, ...] = (0,)
    model: str | None = None
    warmup_epochs: int = 5
    train_epochs: int = 40  # random converged within 0.3 points at 1-10 % (docs/results.md); 20 is a fast mode
    lr: float = 0.05
    batch_size: int = 128
    augment: str = "none"  # of the warm-up and every training run (not of dyn-<kind> rows)
    amp: bool = False  # bfloat16 autocast in the warm-up and every training run (CUDA)
    posterior_samples: int = 4
    posterior_sigma: float = 0.01
    options: MethodConfig = field(default_factory=MethodConfig)
    # dynamic selection during training (prune.dynamic), reported as methods "dyn-<kind>"
    dynamic: tuple[str, ...] = ()
    # the difficulty stage of every method but random, and inside dynamic ensemble|crest (None: defaults)
    drop_hard: str | float | None = None
    strata: int | str | None = None
    strata_budget: str | None = None
    full: bool = True  # train the full-data reference row
    weighted: bool = False  # also train every method but random on its gamma, as "<method>+γ"

    def training(self, epochs: int) -> TrainConfig:
        """The SGD settings of the warm-up (``epochs=warmup_epochs``) and of each cell's training run."""
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=self.lr, augment=self.augment, amp=self.amp)

    def difficulty(self, method: str) -> DifficultyConfig:
        method = method_posterior(method)[0]
        if method == "random":  # the baseline stays plain
            return method_class(method).default_difficulty
        return method_class(method).difficulty(drop_hard=self.drop_hard, strata=self.strata,
                                               strata_budget=self.strata_budget)

    def method(self, row: str) -> MethodConfig:
        """The ``MethodConfig`` of a --methods entry (``craig-mean``: craig with ``posterior="mean"``)."""
        method, posterior = method_posterior(row)
        return dataclasses.replace(self.options, name=method, posterior=posterior or self.options.posterior)

    def check(self) -> None:
        from prune.dynamic import DYNAMIC_KINDS

        if any(not isinstance(m, str) or not m.strip() for m in (*self.methods, *self.dynamic)):
            raise PruneError("--methods and --dynamic take names separated by single commas; an item is empty")
        unknown = [m for m in self.methods if method_posterior(m)[0] not in METHODS]
        if unknown:
            raise PruneError(f"unknown method(s) {', '.join(unknown)} in --methods; choose from {', '.join(METHODS)}")
        unknown = [k for k in self.dynamic if k not in DYNAMIC_KINDS]
        if unknown:
            raise PruneError(f"unknown kind(s) {', '.join(unknown)} in --dynamic; choose from {', '.join(DYNAMIC_KINDS)}")
        if not (self.methods or self.dynamic) or not self.fractions or not self.seeds or not self.label_noise:
            raise PruneError("--methods (or --dynamic), --fractions, --seeds and --label-noise each need at least one value")
        for option, values in (("--methods", self.methods), ("--fractions", self.fractions),
                               ("--label-noise", self.label_noise), ("--seeds", self.seeds), ("--dynamic", self.dynamic)):
            repeated = list(dict.fromkeys(v for i, v in enumerate(values) if v in values[:i]))
            if repeated:  # a repeated seed would count one pair twice, a repeated method or fraction one cell twice
                shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in repeated)
                raise PruneError(f"{option} lists {shown} more than once; give each value once")
        for seed in self.seeds:
            check_seed(seed, "--seeds")
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise PruneError(f"--out {self.out} is a file; prune bench writes a folder there (cells, stores, results): "
                             "choose another path")
        for method in self.methods:
            self.method(method), self.difficulty(method)  # checks the options, --drop-hard and --strata before any work
        # the same for the options no row of this grid reads (random has no stage, only -mean rows and
        # ensemble read the posterior): a bad value is refused whether or not it is used
        method_class("clean").difficulty(drop_hard=self.drop_hard, strata=self.strata, strata_budget=self.strata_budget)
        PosteriorConfig(self.posterior_samples, self.posterior_sigma)
        for flag, epochs in (("--warmup-epochs", self.warmup_epochs), ("--train-epochs", self.train_epochs)):
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
                raise PruneError(f"{flag} must be a whole number >= 0, got {epochs!r}")
        self.training(self.train_epochs)  # --lr, --batch-size, --augment

    def to_dict(self) -> dict:
        out = asdict(self)
        out["out"] = str(self.out)
        return out


def _noise_tag(noise: float) -> str:
    return f"noise{noise:g}"


def _dynamic_config(config: BenchConfig, kind: str, fraction: float, n: int):
    """The ``prune.dynamic.DynamicConfig`` of a ``dyn-<kind>`` cell on ``n`` training examples (see ``_dynamic_cell``)."""
    from prune.dynamic import DynamicConfig

    crest = {"update_rule": "crest", "weighted": True} if kind == "crest" else {}  # learned dropping off, as CREST's code
    if config.drop_hard is not None and kind != "random":  # the stage in each subset (default auto); random has none
        crest["drop_hard"] = config.drop_hard
    if kind == "ensemble":  # its M posterior samples; crest and random select at the current weights (M = 1)
        crest.update(posterior_samples=config.posterior_samples, posterior_sigma=config.posterior_sigma)
    return DynamicConfig(kind=kind, fraction=fraction, epochs=config.train_epochs, batch_size=config.batch_size,
                         lr=config.lr, subset_size=min(max(config.options.subset_size, config.batch_size), n), **crest)


def settings_key(settings: dict) -> str:
    """A short hash of ``settings`` (JSON, keys sorted): what names a cached cell or store in ``OUT/``."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Cells:
    """``OUT/cells/``: one JSON file per finished cell, named by the key of all the settings that produced it.

    With ``reuse`` a cell whose file exists (the same settings, exactly) is read instead of computed.
    """

    def __init__(self, folder: Path, reuse: bool):
        self.folder, self.reuse = folder, reuse
        self.reused = self.computed = 0

    def row(self, name: str, settings: dict, compute) -> dict:
        path = self.folder / f"{name}-{settings_key(settings)}.json"
        if self.reuse and path.exists():
            self.reused += 1
            return json.loads(path.read_text())
        row = compute()
        write_text(path, json.dumps(row) + "\n")
        self.computed += 1
        console.print(f"{row['method']:>9s} fraction {row['fraction']:<5g} noise {row['noise']:<4g} seed {row['seed']}: "
                      f"test accuracy {row['test_accuracy']:.4f}", highlight=False)
        return row


@dataclass
class _Grid:
    """What every cell of a run shares: the options, the data, the model, the device and the cell cache."""

    config: BenchConfig
    data: LoadedData
    model_name: str
    device: torch.device
    cells: Cells

    def check_requests(self) -> None:
        """Every check that needs only the labels and the options, before any model is trained."""
        config = self.config
        for row in config.methods:
            method = config.method(row)
            samples = config.posterior_samples if method.averages_posterior() else 1
            for fraction in config.fractions:
                check_request(self.data.train.y, self.data.num_classes, method, Budget(fraction),
                              posterior_samples=samples, checkpoints=max(config.warmup_epochs, 1))


class _SeedRun:
    """The cells of one (label noise, seed): one warm-up shared by every store, then every row of the grid.

    Cell names and the settings they are keyed by are what earlier runs wrote, so ``--resume``
    finds them; the rows come in the order full, methods (plain, then weighted; by fraction),
    dynamic kinds.
    """

    def __init__(self, grid: _Grid, noise: float, seed: int):
        self.grid, self.config, self.data = grid, grid.config, grid.data
        self.noise, self.seed = noise, seed
        if noise:
            self.labels, self.flipped = flip_labels(self.data.train.y, noise, self.data.num_classes, seed)
        else:
            self.labels, self.flipped = self.data.train.y, torch.empty(0, dtype=torch.int64)
        self.stores: dict[int, FeatureStore] = {}
        self.warm = None
        config = self.config  # what every cell of this (noise, seed) depends on
        # augment and amp only when set, so cells computed before they existed keep their names
        training = {k: v for k, v in config.training(config.train_epochs).to_dict().items() if k in ("augment", "amp")}
        self.base = {"dataset": self.data.record(), "noise": noise, "seed": seed, "model": grid.model_name,
                     "train_epochs": config.train_epochs, "lr": config.lr, "batch_size": config.batch_size, **training}
        self.tag = f"{_noise_tag(noise)}-seed{seed}"

    def rows(self) -> list[dict]:
        rows = []
        try:
            if self.config.full:
                rows.append(self.grid.cells.row(f"{self.tag}-full", {**self.base, "method": "full"}, self.full_cell))
            for row in self.config.methods:
                rows += self.method_rows(row)
            for kind in self.config.dynamic:  # selected during training, at the same budget in backprops
                for fraction in self.config.fractions:
                    settings = {**self.base, "dynamic": asdict(_dynamic_config(self.config, kind, fraction,
                                                                              len(self.data.train)))}
                    rows.append(self.grid.cells.row(f"{self.tag}-dyn-{kind}-{fraction:g}", settings,
                                                    functools.partial(_dynamic_cell, self, kind, fraction)))
        finally:
            for store in self.stores.values():
                store.close()
        return rows

    def train(self, indices: torch.Tensor, weights: torch.Tensor | None = None) -> dict:
        return _train_and_test(self, indices, weights)

    def full_cell(self) -> dict:
        return {"method": "full", "fraction": 1.0, "noise": self.noise, "seed": self.seed, "selection_seconds": 0.0,
                **self.train(torch.arange(len(self.labels)))}

    def features_for(self, method: MethodConfig) -> FeatureConfig:
        config = self.config
        samples = config.posterior_samples if method.averages_posterior() else 1
        return FeatureConfig(model=self.grid.model_name, posterior=PosteriorConfig(samples, config.posterior_sigma),
                             warmup=config.training(config.warmup_epochs))

    def store_settings(self, features: FeatureConfig) -> dict:
        return {"dataset": self.data.record(), "noise": self.noise, "seed": self.seed, "features": features.to_dict()}

    def store_for(self, method: MethodConfig) -> FeatureStore:
        """The store ``method`` selects from (M = 1, or M samples for a posterior mean), built on first use."""
        features = self.features_for(method)
        samples = features.samples
        if samples not in self.stores:
            key = settings_key(self.store_settings(features))
            path = self.config.out / "stores" / f"{self.tag}-M{samples}-{key}.h5"
            if not (self.grid.cells.reuse and path.exists()):
                device = self.grid.device
                if self.warm is None:  # one warm-up per (noise, seed): methods differ only in selection
                    self.warm = warm_up(self.data, self.labels, features, seed=self.seed, device=device)
                noise_record = {"fraction": self.noise, "seed": self.seed} if self.noise else None
                build_store(self.data, TrainingLabels(self.labels, noise_record, self.flipped), path, features,
                            seed=self.seed, device=device, warm=self.warm)
            self.stores[samples] = FeatureStore.open(path)
        return self.stores[samples]

    def method_rows(self, row: str) -> list[dict]:
        """The cells of one --methods entry: every fraction, unweighted and (with ``weighted``) on gamma."""
        options, stage = self.config.method(row), self.config.difficulty(row)
        uses_store = options.method.needs_features or stage.active  # random: no features needed
        store = self.store_settings(self.features_for(options)) if uses_store else None
        rows = []
        for weighted in (False, True) if self.config.weighted and options.name != "random" else (False,):
            for fraction in self.config.fractions:
                settings = {**self.base, "method": options.name, "fraction": fraction, "weighted": weighted,
                            "difficulty": stage.to_dict(), "options": asdict(options), "store": store}
                name = f"{self.tag}-{row}{'-weighted' if weighted else ''}-{fraction:g}"
                cell = _SelectionCell(row + ("+γ" if weighted else ""), options, stage, fraction, weighted, uses_store)
                rows.append(self.grid.cells.row(name, settings, functools.partial(cell.run, self)))
        return rows


@dataclass(frozen=True)
class _SelectionCell:
    """One static cell: select with ``options`` at ``fraction``, then train on the subset (on gamma if ``weighted``)."""

    name: str
    options: MethodConfig
    stage: DifficultyConfig
    fraction: float
    weighted: bool
    uses_store: bool

    def run(self, run: _SeedRun) -> dict:
        if self.uses_store:
            candidates = Candidates.from_store(run.store_for(self.options))
        else:
            candidates = Candidates(run.labels, run.data.record())
        start = time.perf_counter()
        manifest = select(candidates, self.options, Budget(self.fraction), seed=run.seed, difficulty=self.stage,
                          device=run.grid.device)
        seconds = time.perf_counter() - start
        gamma = torch.from_numpy(manifest.weights) if self.weighted else None
        return {"method": self.name, "fraction": self.fraction, "noise": run.noise, "seed": run.seed,
                "selection_seconds": seconds, "dropped_hard": sum(manifest.selection.get("dropped_hard", [])),
                **run.train(torch.from_numpy(manifest.indices), weights=gamma)}


def _train_and_test(run: _SeedRun, indices: torch.Tensor, weights: torch.Tensor | None = None) -> dict:
    """One cell's training run (``prune.training.fit_and_test``) on the labels of ``run``: test accuracy, seconds, size."""
    config = run.config
    result = fit_and_test(run.data, TrainingRows(run.labels, indices, weights), config.training(config.train_epochs),
                          run.grid.model_name, seed=run.seed, device=run.grid.device)
    return {"test_accuracy": result["test_accuracy"], "train_seconds": result["wall_seconds"],
            "train_examples": result["train_examples"]}


def _dynamic_cell(run: _SeedRun, kind: str, fraction: float) -> dict:
    """One ``dyn-<kind>`` cell: prune.dynamic with f * n * train_epochs backprops, as a static subset of f * n gets.

    ``dyn-crest`` runs CREST's own rule (Algorithm 1): re-selection when rho exceeds tau and
    gamma-weighted training. Dropping learned examples stays off, as in CREST's public code and
    ``prune train``: on Fashion-MNIST it shrank the candidates to the hardest 10 % and cost 11
    points (docs/results.md).
    """
    from prune.dynamic import run_dynamic

    cfg = _dynamic_config(run.config, kind, fraction, len(run.labels))
    result = run_dynamic(run.data, cfg, model_name=run.grid.model_name, seed=run.seed, device=run.grid.device,
                         labels=run.labels, description=f"dyn-{kind}")
    seconds = result.timings
    trained = {i for point in result.log["selections"] for batch in point["batches"] for i in batch}
    return {"method": f"dyn-{kind}", "fraction": fraction, "noise": run.noise, "seed": run.seed,
            "selection_seconds": seconds["selection_seconds"], "test_accuracy": result.test["accuracy"],
            "train_seconds": seconds["wall_seconds"] - seconds["selection_seconds"], "train_examples": len(trained)}


def run_bench(config: BenchConfig, device: torch.device, *, reuse: bool = True) -> list[dict]:
    """Run the whole grid, reusing (``reuse``) the cells an earlier run finished with the same settings.

    Returns one row per cell. Every check that needs only the labels and the options runs first.
    """
    config.check()
    check_amp(config.amp, device)
    data = load_dataset(config.dataset, config.data_root)
    grid = _Grid(config, data, config.model or default_model(data.source, data.input_shape), device,
                 Cells(config.out / "cells", reuse))
    grid.check_requests()
    grid.cells.folder.mkdir(parents=True, exist_ok=True)
    write_text(config.out / "config.json", json.dumps({**config.to_dict(), "model": grid.model_name,
                                                       "device": str(device)}, indent=1) + "\n")
    rows = [row for noise in config.label_noise for seed in config.seeds for row in _SeedRun(grid, noise, seed).rows()]
    write_reports(rows, config, grid.model_name)
    if grid.cells.reused:
        console.print(f"reused {grid.cells.reused} of {len(rows)} cells from {grid.cells.folder} (made with the same "
                      f"settings); computed {grid.cells.computed}", highlight=False)
    return rows


def t_quantile(p: float, df: int) -> float:
    """The ``p``-quantile (0.5 <= p < 1) of Student's t distribution with ``df`` >= 1 (an integer) degrees of freedom.

    Bisection on the closed form of P(|T| < t) for integer df (Abramowitz & Stegun 26.7.3-4, in
    theta = arctan(t / sqrt(df))), so exact up to float rounding: t_{0.975, 1} = 12.706,
    t_{0.975, 4} = 2.776, t_{0.975, 29} = 2.045.
    """
    if isinstance(df, bool) or int(df) != df or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    if not 0.5 <= p < 1:
        raise ValueError(f"p must be in [0.5, 1), got {p!r}")
    lo, hi = 0.0, math.pi / 2
    for _ in range(80):  # theta's interval halves each step: far below float precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central(mid, int(df)) < 2 * p - 1 else (lo, mid)
    return math.sqrt(df) * math.tan((lo + hi) / 2)


def _t_central(theta: float, df: int) -> float:
    """P(|T| < sqrt(df) tan theta) for T ~ Student's t with integer ``df`` (A & S 26.7.3-4)."""
    c2 = math.cos(theta) ** 2
    if df % 2 == 0:  # sin(theta) (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(df-2))
        term = total = 1.0
        for k in range(2, df, 2):
            term *= (k - 1) / k * c2
            total += term
        return math.sin(theta) * total
    term = total = math.cos(theta)  # 2/pi (theta + sin(theta) (cos + 2/3 cos^3 + ... up to cos^(df-2)))
    for k in range(3, df, 2):
        term *= (k - 1) / k * c2
        total += term
    return 2 / math.pi * (theta + (math.sin(theta) * total if df > 1 else 0.0))


def t_interval(values, level: float = 0.95) -> tuple[float, float] | None:
    """The ``level`` confidence interval of the mean of ``values`` from Student's t with n - 1 degrees of
    freedom (mean ± t s / sqrt(n), s the sample std); None for fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return None
    half = t_quantile((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def summarise(rows: list[dict]) -> list[dict]:
    """Per (noise, method, fraction): the accuracy over seeds and the paired difference to random.

    ``accuracy_mean``/``accuracy_std`` over the seeds, ``accuracy_ci_low``/``_high`` its 95 %
    t interval. ``diff_mean`` is the mean over the seeds that both this method and ``random``
    (for ``dyn-*`` rows: ``dyn-random``) ran of (accuracy - the baseline's accuracy on the same
    seed, so the same warm-up and training seed), ``diff_ci_low``/``_high`` its 95 % paired t
    interval (t with paired_seeds - 1 degrees of freedom), and ``tie`` whether that interval
    contains 0. With one seed (paired seed) the std, interval and tie are None: one seed shows no spread.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["noise"], row["method"], row["fraction"]), []).append(row)
    out = []
    for (noise, method, fraction), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "full", kv[0][1], kv[0][2])):
        accuracy = np.array([r["test_accuracy"] for r in group])
        low, high = t_interval(accuracy) or (None, None)
        entry = {"noise": noise, "method": method, "fraction": fraction, "seeds": len(group),
                 "accuracy_mean": float(accuracy.mean()), "accuracy_std": _std(accuracy),
                 "accuracy_ci_low": low, "accuracy_ci_high": high,
                 "selection_seconds": float(np.mean([r["selection_seconds"] for r in group])),
                 "train_seconds": float(np.mean([r["train_seconds"] for r in group]))}
        reference = "dyn-random" if method.startswith("dyn-") else "random"  # same budget in backprops
        baseline = {r["seed"]: r["test_accuracy"] for r in groups.get((noise, reference, fraction), [])}
        diffs = np.array([r["test_accuracy"] - baseline[r["seed"]] for r in group if r["seed"] in baseline])
        if method not in (reference, "full") and len(diffs):
            interval = t_interval(diffs)
            entry.update(diff_mean=float(diffs.mean()), diff_std=_std(diffs),
                         diff_ci_low=interval and interval[0], diff_ci_high=interval and interval[1],
                         paired_seeds=len(diffs), tie=interval and bool(interval[0] <= 0 <= interval[1]))
        out.append(entry)
    return out


def _std(values: np.ndarray) -> float | None:
    return float(values.std(ddof=1)) if len(values) > 1 else None


SUMMARY_FIELDS = ("noise", "method", "fraction", "seeds", "accuracy_mean", "accuracy_std", "accuracy_ci_low",
                  "accuracy_ci_high", "paired_seeds", "diff_mean", "diff_std", "diff_ci_low", "diff_ci_high", "tie",
                  "selection_seconds", "train_seconds")


def _csv(records: list[dict], fields) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), restval="")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in record.items()} for record in records)
    return buffer.getvalue()


def write_reports(rows: list[dict], config: BenchConfig, model_name: str) -> None:
    """``results.csv`` (one row per cell), ``summary.csv`` and ``results.json`` (rows and summary),
    ``results.md`` (the tables) and ``results.png`` (the plot)."""
    summary = summarise(rows)
    write_text(config.out / "results.csv", _csv(rows, dict.fromkeys(key for row in rows for key in row)))
    write_text(config.out / "summary.csv", _csv(summary, SUMMARY_FIELDS))
    write_text(config.out / "results.json", json.dumps({"config": config.to_dict(), "model": model_name,
                                                        "rows": rows, "summary": summary}, indent=1) + "\n")
    write_text(config.out / "results.md", markdown_table(summary, config, model_name))
    plot(summary, config.out / "results.png", title=f"{config.dataset} · {model_name}")


def markdown_table(summary: list[dict], config: BenchConfig, model_name: str) -> str:
    fractions = sorted({s["fraction"] for s in summary if s["method"] != "full"})
    lines = [f"Test accuracy (%), mean ± std over seeds {list(config.seeds)}; {config.dataset}, {model_name}, "
             f"warm-up {config.warmup_epochs} epochs, training {config.train_epochs} epochs. In brackets: the paired "
             "difference to random (dyn-* rows: to dyn-random) on the same seeds, mean in points and its 95 % "
             "confidence interval (paired t); *tie* where the interval contains 0, *one seed* where only one "
             "seed was paired (no interval).", ""]
    for noise in sorted({s["noise"] for s in summary}):
        lines += [f"**label noise {noise:g}**", "",
                  "| method | " + " | ".join(f"{f:g}" for f in fractions) + " | selection s | training s |",
                  "|---|" + "---:|" * (len(fractions) + 2)]
        for method in dict.fromkeys(s["method"] for s in summary if s["noise"] == noise):
            cells = {s["fraction"]: s for s in summary if s["noise"] == noise and s["method"] == method}
            if method == "full":
                values = [f"{_accuracy_text(cells[1.0])} (all data{', one seed' if cells[1.0]['seeds'] == 1 else ''})"] + [""] * (len(fractions) - 1)
            else:
                values = [_cell_text(cells[f]) if f in cells else "–" for f in fractions]
            sel = np.mean([c["selection_seconds"] for c in cells.values()])
            train = np.mean([c["train_seconds"] for c in cells.values()])
            lines.append(f"| {method} | " + " | ".join(values) + f" | {sel:.1f} | {train:.1f} |")
        lines.append("")
    return "\n".join(lines)


def _accuracy_text(s: dict) -> str:
    if s["accuracy_std"] is None:
        return f"{100 * s['accuracy_mean']:.2f}"
    return f"{100 * s['accuracy_mean']:.2f} ± {100 * s['accuracy_std']:.2f}"


def _cell_text(s: dict) -> str:
    """``mean ± std (+diff [low, high])``; one seed: ``mean (+diff, one seed)``, or ``mean (one seed)``."""
    text = _accuracy_text(s)
    if "diff_mean" not in s:
        return text + (" (one seed)" if s["accuracy_std"] is None else "")
    if s["diff_ci_low"] is None:
        return text + f" ({100 * s['diff_mean']:+.2f}, one seed)"
    verdict = " *tie*" if s["tie"] else ""
    return text + f" ({100 * s['diff_mean']:+.2f} [{100 * s['diff_ci_low']:+.2f}, {100 * s['diff_ci_high']:+.2f}]{verdict})"


def plot(summary: list[dict], path: Path, title: str) -> None:
    """Test accuracy against kept fraction, one panel per label noise and one line per method: the mean
    over seeds, with its 95 % t interval as error bars (none for one seed); the full-data row dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = sorted({s["noise"] for s in summary})
    fig, axes = plt.subplots(1, len(noises), figsize=(5.5 * len(noises), 4.2), squeeze=False, sharey=True)
    ticks = sorted({s["fraction"] for s in summary if s["method"] != "full"})
    for ax, noise in zip(axes[0], noises):
        for method in dict.fromkeys(s["method"] for s in summary if s["noise"] == noise):
            points = sorted((s for s in summary if s["noise"] == noise and s["method"] == method), key=lambda s: s["fraction"])
            if method == "full":
                ax.axhline(100 * points[0]["accuracy_mean"], color="black", linestyle="--", linewidth=1, label="full data")
                continue
            mean = np.array([100 * p["accuracy_mean"] for p in points])
            low = np.array([100 * (p["accuracy_mean"] if p["accuracy_ci_low"] is None else p["accuracy_ci_low"])
                            for p in points])
            high = np.array([100 * (p["accuracy_mean"] if p["accuracy_ci_high"] is None else p["accuracy_ci_high"])
                             for p in points])
            ax.errorbar([100 * p["fraction"] for p in points], mean, yerr=[mean - low, high - mean], marker="o",
                        capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_xticks([100 * f for f in ticks], [f"{100 * f:g}%" for f in ticks])
        ax.minorticks_off()
        ax.set_xlabel("subset size (% of training set)")
        ax.set_title(f"label noise {noise:g}")
        ax.grid(alpha=0.3)
    bottom, top = axes[0][0].get_ylim()  # an interval of few seeds can reach past 0 or 100 %: accuracy cannot
    axes[0][0].set_ylim(max(bottom, 0), min(top, 100))
    axes[0][0].set_ylabel("test accuracy (%): mean, 95 % CI")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


from prune.callable_module import make_callable  # noqa: E402  prune.bench(...) is prune.api.bench(...)

make_callable(__name__)
