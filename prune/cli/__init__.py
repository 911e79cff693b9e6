"""The `prune` command line: select, features, train, inspect."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from prune.api import (dataset_record, feature_config, load_training_data, recorded_options, select_coreset,
                       source_options)
from prune.atomic import ensure_writable, write_text
from prune.data import DATASETS, load_dataset
from prune.dynamic import DynamicConfig, replay, run_dynamic, subset_log
from prune.errors import PruneError
from prune.features.build import build_store
from prune.manifest import Manifest, dataset_mismatch
from prune.selection.methods import METHODS, MethodOptions
from prune.features.partial import partial_path
from prune.models import MODELS, build_model, default_model
from prune.selection import SelectionPlan
from prune.training import TrainConfig, console, evaluate, fit, resolve_device, seed_everything

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Shrink a training set to a coreset and write the choice down as a manifest.")


def user_errors(command):
    """Turn PruneError into one line on stderr and exit code 2 (no traceback); Ctrl-C exits 130."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PruneError as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:  # outputs are written atomically: nothing half-written is left
            console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return run


# -- shared options ------------------------------------------------------------------------
Dataset = typer.Option("digits", "--dataset", help=f"Data source: {', '.join(DATASETS)}.")
DataRoot = typer.Option(None, "--data-root", help="Folder holding the dataset files.")
Download = typer.Option(False, "--download", help="Download the dataset into --data-root if missing.")
Device = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda.")
Seed = typer.Option(0, "--seed", help="Seed for warm-up, posterior draws and selection.")
Model = typer.Option(None, "--model", help=f"One of {', '.join(MODELS)}; default: mlp for small inputs, lenet for images, resnet20 for CIFAR.")
WarmupEpochs = typer.Option(5, "--warmup-epochs", help="Epochs of warm-up on the full training split.")
LearningRate = typer.Option(0.05, "--lr", help="SGD learning rate (momentum 0.9, weight decay 5e-4, cosine schedule).")
BatchSize = typer.Option(128, "--batch-size", help="SGD batch size.")
Samples = typer.Option(1, "--posterior-samples", help="M posterior samples (1 = none).")
Sigma = typer.Option(0.01, "--posterior-sigma", help="Std of the Gaussian weight perturbations.")
Layers = typer.Option("bn", "--posterior-layers", help="bn, fc or all: the parameters perturbed.")
Kind = typer.Option("gaussian", "--posterior-kind", help="gaussian, hessian or seeds.")
Hessian = typer.Option("exact", "--hessian", help="exact (closed form) or hutchinson.")
HutchinsonSamples = typer.Option(100, "--hutchinson-samples", help="Rademacher probes for --hessian hutchinson.")
Dtype = typer.Option("float32", "--dtype", help="Storage type of features: float32 or float16.")
LabelNoise = typer.Option(0.0, "--label-noise", help="Fraction of training labels to flip to another class.")
NoiseSeed = typer.Option(0, "--noise-seed", help="Seed of the label flips.")


# hf: sources (prune.data.hf): which split and columns to read
Split = typer.Option(None, "--split", help="hf: DatasetDict split to train on (default: train).")
ImageColumn = typer.Option(None, "--image-column", help="hf: column of images (default: image).")
LabelColumn = typer.Option(None, "--label-column", help="hf: column of integer labels (default: label).")
FeatureColumn = typer.Option(None, "--feature-column", help="hf: column of precomputed vectors (instead of images).")


@app.command("features")
@user_errors
def features_command(
    out: Path = typer.Option(..., "--out", help="HDF5 file to write (written to a temporary name, then renamed)."),
    dataset: str = Dataset, data_root: Optional[str] = DataRoot, download: bool = Download,
    model: Optional[str] = Model, warmup_epochs: int = WarmupEpochs, lr: float = LearningRate,
    batch_size: int = BatchSize, posterior_samples: int = Samples, posterior_sigma: float = Sigma,
    posterior_layers: str = Layers, posterior_kind: str = Kind, hessian: str = Hessian,
    hutchinson_samples: int = HutchinsonSamples, dtype: str = Dtype,
    label_noise: float = LabelNoise, noise_seed: int = NoiseSeed, seed: int = Seed, device: str = Device,
    split: Optional[str] = Split, image_column: Optional[str] = ImageColumn, label_column: Optional[str] = LabelColumn,
    feature_column: Optional[str] = FeatureColumn,
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run of the same --out and settings from its last complete block."),
):
    """Warm up a model and store per-sample gradients, Hessian diagonals and embeddings."""
    torch_device = resolve_device(device)
    data, labels, noise, flipped = load_training_data(
        dataset, data_root, download, label_noise, noise_seed,
        **source_options(split, image_column, label_column, feature_column))
    config = feature_config(data, model, warmup_epochs, lr, batch_size, posterior_samples, posterior_sigma,
                            posterior_layers, posterior_kind, hessian, hutchinson_samples, dtype)
    start = time.perf_counter()
    try:
        build_store(data, labels, out, config, seed=seed, device=torch_device, label_noise=noise, flipped=flipped,
                    resume=resume)
    except KeyboardInterrupt:
        if partial_path(out).exists():
            console.print(f"interrupted: the work done is kept in {partial_path(out)}; run the same command with "
                          "--resume to continue it", highlight=False)
        raise typer.Exit(130) from None
    console.print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")


@app.command("select")
@user_errors
def select_command(
    ctx: typer.Context,
    method: str = typer.Option("craig", "--method", help=f"One of {', '.join(METHODS)}."),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="Fraction of the training split to keep (default 0.1)."),
    count: Optional[int] = typer.Option(None, "--count", help="Number of examples to keep (instead of --fraction)."),
    balance: str = typer.Option("proportional", "--balance", help="proportional (class shares kept) or equal."),
    out: Optional[Path] = typer.Option(None, "--out", help="Manifest to write; default manifests/<dataset>-<method>-<budget>.json."),
    features: Optional[Path] = typer.Option(None, "--features", help="Select from this feature store (no model is run)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Keep the features computed here (default: a temporary file)."),
    dataset: str = Dataset, data_root: Optional[str] = DataRoot, download: bool = Download,
    model: Optional[str] = Model, warmup_epochs: int = WarmupEpochs, lr: float = LearningRate,
    batch_size: int = BatchSize, posterior_samples: int = Samples, posterior_sigma: float = Sigma,
    posterior_layers: str = Layers, posterior_kind: str = Kind, hessian: str = Hessian,
    hutchinson_samples: int = HutchinsonSamples,
    label_noise: float = LabelNoise, noise_seed: int = NoiseSeed, seed: int = Seed, device: str = Device,
    max_pool: int = typer.Option(10_000, "--max-pool", help="Largest pool one greedy run sees; larger classes are split at random."),
    rho: float = typer.Option(0.05, "--rho", help="lcmat: weight of the curvature term."),
    top_k: int = typer.Option(100, "--top-k", help="lcmat: Hessian coordinates matched (largest variance)."),
    top_k_scope: str = typer.Option("all", "--top-k-scope", help="lcmat: choose the top-K over all data or per class."),
    damping: float = typer.Option(1e-3, "--damping", help="adacore: eps = damping * mean Hessian diagonal."),
    subset_size: int = typer.Option(500, "--subset-size", help="crest: size r of the random subsets."),
    learned_loss: float = typer.Option(0.1, "--learned-loss", help="crest: loss below which an example counts as learned."),
    learned_window: int = typer.Option(2, "--learned-window", help="crest: checkpoints the loss must stay low (0 = keep all)."),
    split: Optional[str] = Split, image_column: Optional[str] = ImageColumn, label_column: Optional[str] = LabelColumn,
    feature_column: Optional[str] = FeatureColumn,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (budget per class, pools, memory) and stop: no model is run, nothing is written."),
):
    """Select a coreset and write its manifest."""
    if fraction is None and count is None:
        fraction = 0.1
    if out is not None and not dry_run:
        ensure_writable(out)  # fail now, not after the warm-up
    # --dataset with --features: check the store against that dataset (its default means "the store's")
    source = ctx.get_parameter_source("dataset")  # typer may vendor click: compare by name
    given = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
    start = time.perf_counter()
    # one code path with the Python API (prune.select_coreset)
    manifest = select_coreset(
        dataset if given or features is None else None, method, dry_run=dry_run,
        fraction=fraction, count=count, balance=balance, seed=seed, features=features, store=store,
        data_root=data_root, download=download, split=split, image_column=image_column, label_column=label_column,
        feature_column=feature_column, model=model, warmup_epochs=warmup_epochs, lr=lr, batch_size=batch_size,
        posterior_samples=posterior_samples, posterior_sigma=posterior_sigma, posterior_layers=posterior_layers,
        posterior_kind=posterior_kind, hessian=hessian, hutchinson_samples=hutchinson_samples,
        label_noise=label_noise, noise_seed=noise_seed, device=device,
        options=MethodOptions(max_pool=max_pool, rho=rho, top_k=top_k, top_k_scope=top_k_scope, damping=damping,
                              subset_size=subset_size, learned_loss=learned_loss, learned_window=learned_window),
    )
    seconds = time.perf_counter() - start
    if out is None:
        budget = f"{fraction:g}" if fraction is not None else f"n{count}"
        source = manifest.dataset["source"]
        out = Path("manifests") / f"{Path(source).stem.replace('npz:', '')}-{method}-{budget}.json"
    if dry_run:
        print_plan(manifest, out)
        return
    manifest.save(out)
    console.print(f"selected {len(manifest)} of {manifest.dataset['num_examples']} examples with {method} "
                  f"in {seconds:.1f} s -> {out}")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def print_plan(plan: SelectionPlan, out: Path) -> None:
    """``prune select --dry-run``: the budget per class, the greedy pools and the memory they need."""
    total, n = sum(plan.budgets), sum(plan.class_sizes)
    table = Table(title=f"plan: {plan.method} on {plan.dataset['source']}, {total} of {n} examples ({total / n:.2%})")
    for column in ("class", "examples", "budget", "pools (size: budget)"):
        table.add_column(column, justify="left" if column.startswith("pools") else "right")
    for c, (size, budget) in enumerate(zip(plan.class_sizes, plan.budgets)):
        if plan.pools is None:
            pools = "-"
        else:
            pools = ", ".join(f"{p}: {b}" for p, b in plan.pools[c][:4]) + (
                f", ... ({len(plan.pools[c])} pools)" if len(plan.pools[c]) > 4 else "") or "-"
        table.add_row(str(c), str(size), str(budget), pools)
    console.print(table)
    if plan.pools is not None:
        count = sum(len(p) for p in plan.pools)
        console.print(f"greedy runs: {count}; largest pool p = {plan.largest_pool}"
                      + ("" if plan.exact_pools else " (before crest drops learned examples)"), highlight=False)
        console.print(f"memory: largest distance matrix p^2 x 4 B = {_size(plan.distance_bytes)}, features "
                      f"{_size(plan.feature_bytes)}, together about {_size(plan.memory_bytes)}", highlight=False)
    console.print(f"dry run: no model was run and nothing was written (the manifest would go to {out})", highlight=False)


@app.command("train")
@user_errors
def train_command(
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Train on this manifest's subset."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data source (default: the manifest's, else digits)."),
    data_root: Optional[str] = DataRoot, download: bool = Download,
    model: Optional[str] = Model,
    epochs: int = typer.Option(20, "--epochs", help="Training epochs."),
    lr: float = LearningRate, batch_size: int = BatchSize,
    weighted: bool = typer.Option(False, "--weighted", help="Weight each example by its gamma."),
    force: bool = typer.Option(False, "--force", help="Train even if the data do not match the manifest."),
    metrics: Optional[Path] = typer.Option(None, "--metrics", help="Write test accuracy, timings and history as JSON."),
    seed: int = Seed, device: str = Device,
    split: Optional[str] = Split, image_column: Optional[str] = ImageColumn, label_column: Optional[str] = LabelColumn,
    feature_column: Optional[str] = FeatureColumn,
    dynamic: Optional[str] = typer.Option(None, "--dynamic", help="Select mini-batch coresets during training: ensemble, crest or random (README, \"Dynamic selection\")."),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="--dynamic: fraction of full-data backprops, f * n * epochs in all (default 0.1)."),
    every: int = typer.Option(1, "--every", help="--dynamic: re-select every R epochs (update rule every)."),
    subset_size: int = typer.Option(500, "--subset-size", help="--dynamic: size r of each random subset a coreset is selected from."),
    posterior_samples: Optional[int] = typer.Option(None, "--posterior-samples", help="--dynamic ensemble: M posterior samples (default 4)."),
    posterior_sigma: float = Sigma, posterior_layers: str = Layers,
    update_rule: str = typer.Option("every", "--update-rule", help="--dynamic: every (each R epochs) or crest (quadratic-approximation rule)."),
    tau: float = typer.Option(0.05, "--tau", help="--update-rule crest: re-select when rho > tau."),
    learned_loss: float = typer.Option(0.0, "--learned-loss", help="--dynamic: drop examples whose loss stayed below this (0 = keep all)."),
    learned_window: int = typer.Option(2, "--learned-window", help="--dynamic: selections the loss must stay low to drop an example."),
    log: Optional[Path] = typer.Option(None, "--log", help="--dynamic: write the subset log here (replay it with --manifest)."),
):
    """Train a fresh model on a manifest's subset (or on the full data) and evaluate it."""
    if dynamic is not None or (manifest is not None and subset_log.is_subset_log(manifest)):
        train_dynamic(dynamic=dynamic, manifest=manifest, dataset=dataset, data_root=data_root, download=download,
                  model=model, epochs=epochs, lr=lr, batch_size=batch_size, weighted=weighted, force=force,
                  metrics=metrics, seed=seed, device=device,
                  source_options=source_options(split, image_column, label_column, feature_column),
                  fraction=fraction, every=every, subset_size=subset_size, posterior_samples=posterior_samples,
                  posterior_sigma=posterior_sigma, posterior_layers=posterior_layers, update_rule=update_rule,
                  tau=tau, learned_loss=learned_loss, learned_window=learned_window, log=log)
        return
    if fraction is not None or log is not None:
        raise PruneError("--fraction and --log belong to dynamic training; add --dynamic ensemble|crest|random "
                         "(or select a static subset with `prune select --fraction`)")
    torch_device = resolve_device(device)
    if metrics:
        ensure_writable(metrics)  # fail now, not after training
    chosen = Manifest.load(manifest) if manifest else None
    options = source_options(split, image_column, label_column, feature_column)
    if chosen is not None:
        dataset = dataset or chosen.dataset["source"]
        data_root = data_root or chosen.dataset.get("root")
        if dataset.startswith("hf:"):  # the split and columns the manifest was made from, unless given
            recorded = recorded_options(chosen.dataset)
            if "image_column" in options or "feature_column" in options:
                recorded.pop("image_column", None), recorded.pop("feature_column", None)
            options = {**recorded, **options}
    data = load_dataset(dataset or "digits", data_root, download, **options)
    labels = data.train.y
    indices = torch.arange(len(labels))
    weights = None
    if chosen is not None:
        counts = torch.bincount(labels, minlength=data.num_classes).tolist()
        warning = chosen.check_dataset(fingerprint=data.fingerprint, num_examples=len(labels), force=force,
                                       class_counts=counts)
        if warning:
            console.print(f"[yellow]warning:[/] {warning}")
        labels = torch.from_numpy(chosen.training_labels(labels.numpy()))
        indices = torch.from_numpy(chosen.indices)
        if weighted:
            weights = torch.from_numpy(chosen.weights)
        if model is None and chosen.model:
            model = chosen.model.get("features", {}).get("model")
    model_name = model or default_model(data.source, data.input_shape)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr)
    seed_everything(seed)
    net = build_model(model_name, data.input_shape, data.num_classes)
    start = time.perf_counter()
    history = fit(net, data.train.x[indices], labels[indices], config, device=torch_device, seed=seed,
                  weights=weights, description=f"train {model_name}")
    wall = time.perf_counter() - start
    if len(data.test):
        test = evaluate(net, data.test.x, data.test.y, device=torch_device)
    else:  # an hf: dataset without a test split
        test = {"accuracy": None, "loss": None}
        console.print(f"[yellow]note:[/] {data.source} has no test split; no test accuracy to report")
    result = {
        "test_accuracy": test["accuracy"], "test_loss": test["loss"], "train_examples": len(indices),
        "epochs": epochs, "wall_seconds": wall, "model": model_name, "weighted": weighted, "seed": seed,
        "manifest": str(manifest) if manifest else None, "dataset": data.source, "train": config.to_dict(),
        "history": history,
    }
    table = Table(title="prune train")
    for column in ("dataset", "subset", "model", "epochs", "test accuracy", "seconds"):
        table.add_column(column)
    subset = f"{chosen.method['name']} {len(indices)}" if chosen else f"full {len(indices)}"
    accuracy = "-" if test["accuracy"] is None else f"{test['accuracy']:.4f}"
    table.add_row(data.source, subset, model_name, str(epochs), accuracy, f"{wall:.1f}")
    console.print(table)
    if metrics:
        write_text(metrics, json.dumps(result, indent=1) + "\n")


@app.command("inspect")
@user_errors
def inspect_command(
    manifest: Path = typer.Argument(..., help="Manifest to summarise."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Check the manifest against this data source."),
    data_root: Optional[str] = DataRoot,
    split: Optional[str] = Split, label_column: Optional[str] = LabelColumn,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Subset logs: write the selection-count histogram here (default: beside the log)."),
):
    """Summarise a manifest: method, budget, per-class counts; check it against data."""
    if subset_log.is_subset_log(manifest):  # the log of a dynamic run (prune train --dynamic --log)
        inspect_log(manifest, plot)
        return
    chosen = Manifest.load(manifest)
    info = Table(title=str(manifest), show_header=False)
    info.add_row("dataset", f"{chosen.dataset['source']} ({chosen.dataset['num_examples']} examples, "
                 f"{chosen.dataset['num_classes']} classes)")
    if chosen.dataset.get("columns"):
        columns = ", ".join(f"{role} {name!r}" for role, name in chosen.dataset["columns"].items())
        info.add_row("split, columns", f"{chosen.dataset['split']}; {columns}")
    info.add_row("fingerprint", chosen.dataset["fingerprint"])
    info.add_row("method", f"{chosen.method['name']} {json.dumps(chosen.method.get('params', {}))}")
    budget = chosen.budget
    info.add_row("budget", f"{len(chosen)} examples ({len(chosen) / chosen.dataset['num_examples']:.2%}), {budget.get('balance')}")
    info.add_row("weights", f"min {chosen.weights.min():g}, mean {chosen.weights.mean():g}, max {chosen.weights.max():g}" if len(chosen) else "-")
    info.add_row("seed", str(chosen.seed))
    if chosen.label_noise:
        info.add_row("label noise", f"{chosen.label_noise['fraction']} ({len(chosen.label_noise['flipped'])} flipped)")
    info.add_row("created", f"{chosen.created_at} by prune {chosen.prune_version}")
    console.print(info)
    classes = Table(title="per class")
    classes.add_column("class", justify="right")
    classes.add_column("selected", justify="right")
    for c, k in enumerate(chosen.per_class):
        classes.add_row(str(c), str(k))
    console.print(classes)
    if dataset and dataset.strip()[:3].lower() == "hf:":  # labels only: no images are read
        from prune.data.hf_filter import check_saved

        console.print(f"[green]matches[/] {check_saved(chosen, dataset, split=split, label_column=label_column)}")
    elif dataset:
        data = load_dataset(dataset, data_root, **source_options(split=split, label_column=label_column))
        counts = torch.bincount(data.train.y, minlength=data.num_classes).tolist()
        chosen.check_dataset(fingerprint=data.fingerprint, num_examples=len(data.train), class_counts=counts)
        console.print(f"[green]matches[/] {data.source}")


@app.command("filter")
@user_errors
def filter_command(
    manifest: Path = typer.Option(..., "--manifest", help="Manifest whose rows to keep."),
    out: Path = typer.Option(..., "--out", help="Folder to write with save_to_disk (written beside it, then renamed)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="hf:PATH, a save_to_disk folder (default: the manifest's source)."),
    split: Optional[str] = typer.Option(None, "--split", help="DatasetDict split to filter (default: the manifest's); other splits are copied."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Column of labels checked against the manifest (default: the manifest's, else label)."),
    weight_column: bool = typer.Option(False, "--weight-column", help="Add a prune_weight column holding each row's gamma."),
    force: bool = typer.Option(False, "--force", help="Write even if the data do not match the manifest (warns)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
):
    """Write a manifest's rows of a Hugging Face dataset (hf:PATH) to a new save_to_disk folder."""
    from prune.data.hf_filter import write_filtered

    chosen = Manifest.load(manifest)
    source = dataset or chosen.dataset["source"]
    if not source.strip().lower().startswith("hf:"):
        raise PruneError(f"prune filter writes Hugging Face datasets; pass --dataset hf:PATH "
                         f"(the manifest was made from {chosen.dataset['source']!r})")
    start = time.perf_counter()
    written, rows, warning = write_filtered(chosen, source, out, split=split, label_column=label_column,
                                            weight_column=weight_column, force=force, overwrite=overwrite)
    if warning:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"wrote {rows} of {chosen.dataset['num_examples']} rows to {written} "
                  f"in {time.perf_counter() - start:.1f} s")


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise PruneError(f"{name} must be comma-separated numbers, got {text!r}") from None


@app.command("bench")
@user_errors
def bench_command(
    out: Path = typer.Option(..., "--out", help="Folder for cells, stores, results.{csv,json,md,png}; re-running resumes."),
    dataset: str = Dataset, data_root: Optional[str] = DataRoot,
    methods: str = typer.Option("random,craig,adacore,lcmat,ensemble,crest", "--methods", help="Comma-separated methods."),
    fractions: str = typer.Option("0.01,0.05,0.1", "--fractions", help="Comma-separated subset fractions."),
    label_noise: str = typer.Option("0", "--label-noise", help="Comma-separated label-noise fractions."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds (warm-up, selection, training)."),
    model: Optional[str] = Model, warmup_epochs: int = WarmupEpochs,
    train_epochs: int = typer.Option(20, "--train-epochs", help="Epochs of each fresh training run."),
    lr: float = LearningRate, batch_size: int = BatchSize,
    posterior_samples: int = typer.Option(4, "--posterior-samples", help="M for the ensemble method's store."),
    posterior_sigma: float = Sigma, device: str = Device,
    dynamic: str = typer.Option("", "--dynamic", help="Comma-separated dynamic kinds (ensemble,crest,random): trained with selection during training at each fraction's backprop budget, reported as dyn-<kind>."),
):
    """Evaluate methods x fractions x label noise x seeds; write tables and plots."""
    from prune.bench import BenchConfig, run_bench

    config = BenchConfig(
        dataset=dataset, out=out, data_root=data_root, methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        fractions=_floats(fractions, "--fractions"), label_noise=_floats(label_noise, "--label-noise"),
        seeds=tuple(int(s) for s in _floats(seeds, "--seeds")), model=model, warmup_epochs=warmup_epochs,
        train_epochs=train_epochs, lr=lr, batch_size=batch_size, posterior_samples=posterior_samples,
        posterior_sigma=posterior_sigma, dynamic=tuple(k.strip() for k in dynamic.split(",") if k.strip()),
    )
    run_bench(config, resolve_device(device))
    console.print(f"results: {out / 'results.md'}, {out / 'results.png'}")


def train_dynamic(*, dynamic: str | None, manifest, dataset: str | None, data_root, download: bool, model: str | None,
                  epochs: int, lr: float, batch_size: int, weighted: bool, force: bool, metrics, seed: int,
                  device: str, source_options: dict, fraction: float | None, every: int, subset_size: int,
                  posterior_samples: int | None, posterior_sigma: float, posterior_layers: str, update_rule: str,
                  tau: float, learned_loss: float, learned_window: int, log) -> dict:
    """``prune train --dynamic KIND`` (a dynamic run) or ``prune train --manifest LOG`` (its replay)."""
    torch_device = resolve_device(device)
    if dynamic is not None and manifest is not None:
        raise PruneError("--dynamic selects during training and --manifest trains on a saved subset; give one of them")
    for path in (log, metrics):
        if path is not None:
            ensure_writable(path)
    if manifest is not None:  # replay a subset log
        if log is not None:
            raise PruneError("--log writes the log of a --dynamic run; a replay (--manifest LOG) writes none")
        recorded = subset_log.load(manifest)
        record = recorded["dataset"]
        options = {**recorded_options(record), **source_options} if str(record["source"]).startswith("hf:") else source_options
        data = load_dataset(dataset or record["source"], data_root or record.get("root"), download, **options)
        counts = torch.bincount(data.train.y, minlength=data.num_classes).tolist()
        problem = dataset_mismatch(record, fingerprint=data.fingerprint, num_examples=len(data.train),
                                   class_counts=counts, what="subset log")
        if problem is not None:
            message = f"subset log was made for {record['source']!r} but the data given does not match: {problem}"
            if not force:
                raise PruneError(message + "; pass the dataset the log was made from, or --force")
            console.print(f"[yellow]warning:[/] {message} (continuing because of --force)")
        s = recorded["settings"]
        console.print(f"replaying {manifest}: {len(recorded['selections'])} selection points, "
                      f"{recorded['budget']['steps']} steps; model, seed, epochs, lr and batches come from the log",
                      highlight=False)
        start = time.perf_counter()
        result = replay(recorded, data, device=torch_device)
        wall = time.perf_counter() - start
        kind, model_name, run_epochs = s["kind"], s["model"], len(recorded["budget"]["epoch_steps"])
        extra = {"replayed": str(manifest), "selections": len(recorded["selections"])}
        fraction_used, run_seed = s["fraction"], s["seed"]
    else:
        data = load_dataset(dataset or "digits", data_root, download, **source_options)
        model_name = model or default_model(data.source, data.input_shape)
        cfg = DynamicConfig(kind=dynamic, fraction=0.1 if fraction is None else fraction, epochs=epochs,
                            batch_size=batch_size, lr=lr, subset_size=subset_size, every=every,
                            update_rule=update_rule, tau=tau, posterior_samples=posterior_samples,
                            posterior_sigma=posterior_sigma, posterior_layers=posterior_layers, weighted=weighted,
                            learned_loss=learned_loss, learned_window=learned_window)
        cfg.check()
        if subset_size > len(data.train):
            console.print(f"[yellow]note:[/] --subset-size {subset_size} exceeds the {len(data.train)} training "
                          "examples; each subset is the whole training set", highlight=False)
        start = time.perf_counter()
        result = run_dynamic(data, cfg, model_name=model_name, seed=seed, device=torch_device,
                             dataset_record=dataset_record(data, data_root), description=f"dynamic {dynamic}")
        wall = time.perf_counter() - start
        if log is not None:
            subset_log.save(result.log, log)
        kind, run_epochs, fraction_used, run_seed = dynamic, epochs, cfg.fraction, seed
        r = result.log["result"]
        extra = {"selections": r["selections"], "forward_examples": r["forward_examples"],
                 "selection_seconds": r["selection_seconds"], "log": str(log) if log else None,
                 "checks": len(result.log["checks"])}
    test = result.test
    n = len(data.train)
    out = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "dynamic": kind, "fraction": fraction_used,
           "backprops": result.backprops, "full_data_backprops": n * run_epochs,
           "train_examples": len({i for p in result.log["selections"] for b in p["batches"] for i in b}),
           "epochs": run_epochs, "wall_seconds": wall, "model": model_name, "weighted": bool(weighted), "seed": run_seed,
           "manifest": str(manifest) if manifest else None, "dataset": data.source, **extra,
           "history": result.history}
    table = Table(title="prune train (dynamic)")
    for column in ("dataset", "selection", "model", "epochs", "backprops", "test accuracy", "seconds"):
        table.add_column(column)
    accuracy = "-" if test["accuracy"] is None else f"{test['accuracy']:.4f}"
    table.add_row(data.source, f"{kind} {float(fraction_used):g}", model_name, str(run_epochs),
                  f"{result.backprops} ({result.backprops / (n * run_epochs):.1%})", accuracy, f"{wall:.1f}")
    console.print(table)
    if log is not None and manifest is None:
        console.print(f"subset log -> {log}", highlight=False)
    if metrics:
        write_text(metrics, json.dumps(out, indent=1) + "\n")
    return out



def inspect_log(path, plot=None) -> dict:
    """``prune inspect LOG``: summary table and a PNG histogram of selection counts."""
    log = subset_log.load(path)
    facts = subset_log.summary(log)
    s, d, b = log["settings"], log["dataset"], log["budget"]
    info = Table(title=str(path), show_header=False)
    info.add_row("dataset", f"{d['source']} ({d['num_examples']} examples, {d['num_classes']} classes)")
    info.add_row("fingerprint", d["fingerprint"])
    info.add_row("dynamic", f"{s['kind']}, update rule {s['update_rule']}"
                 + (f" (every {s['every']} epochs)" if s["update_rule"] == "every" else f" (tau {s['tau']})"))
    knobs = {k: s[k] for k in ("subset_size", "batch_size", "posterior_samples", "posterior_sigma", "class_balance",
                               "weighted", "learned_loss") if k in s}
    info.add_row("settings", json.dumps(knobs))
    info.add_row("budget", f"fraction {b['fraction']}: {facts['backprops']} backprops "
                 f"(planned {b['backprops']} = {b['fraction']} x {d['num_examples']} x {b['epochs']} epochs) "
                 f"in {facts['steps']} steps")
    reasons = ", ".join(f"{k} {v}" for k, v in facts["reasons"].items())
    info.add_row("selection points", f"{facts['selection_points']} ({reasons}); {facts['coresets']} coresets")
    if facts["checks"]:
        info.add_row("crest checks", f"{facts['checks']} evaluations of rho, {facts['reselections_by_rho']} re-selections")
    info.add_row("examples selected", f"{facts['distinct_selected']} distinct ({facts['distinct_selected'] / d['num_examples']:.1%}); "
                 f"each {facts['mean_selected']:.2f} times on average, at most {facts['max_selected']}")
    info.add_row("examples trained", f"{facts['distinct_trained']} distinct")
    result = log.get("result") or {}
    if result.get("test_accuracy") is not None:
        info.add_row("test accuracy", f"{result['test_accuracy']:.4f}")
    info.add_row("model, seed", f"{s['model']}, {s['seed']}")
    info.add_row("created", f"{log['created_at']} by prune {log['prune_version']}")
    console.print(info)
    hist = subset_log.counts_histogram(log)
    counts = Table(title="times selected")
    counts.add_column("times", justify="right")
    counts.add_column("examples", justify="right")
    for times, number in enumerate(hist.tolist()):
        if number:
            counts.add_row(str(times), str(number))
    console.print(counts)
    target = plot or subset_log.default_plot_path(path)
    subset_log.plot_counts(log, target)
    console.print(f"histogram -> {target}", highlight=False)
    return {**facts, "plot": str(target)}


def main() -> None:
    app()
