"""The `prune` command line: select, features, train, inspect."""

from __future__ import annotations

import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer
from rich.table import Table

from prune.atomic import write_text
from prune.data import DATASETS, LoadedData, flip_labels, load_dataset
from prune.errors import PruneError
from prune.featurize import FeatureConfig, build_store
from prune.manifest import Manifest
from prune.methods import METHODS, MethodOptions
from prune.models import MODELS, build_model, default_model
from prune.selection import Candidates, select
from prune.store import FeatureStore
from prune.training import TrainConfig, console, evaluate, fit, resolve_device, seed_everything

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Shrink a training set to a coreset and write the choice down as a manifest.")


def user_errors(command):
    """Turn PruneError into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PruneError as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

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


def load_training_data(dataset: str, data_root: Optional[str], download: bool, label_noise: float, noise_seed: int):
    """Load data and apply label noise; returns (data, labels used, noise record, flipped)."""
    data = load_dataset(dataset, data_root, download)
    if not label_noise:
        return data, data.train.y, None, torch.empty(0, dtype=torch.int64)
    labels, flipped = flip_labels(data.train.y, label_noise, data.num_classes, noise_seed)
    return data, labels, {"fraction": label_noise, "seed": noise_seed}, flipped


def feature_config(data: LoadedData, model, warmup_epochs, lr, batch_size, samples, sigma, layers, kind, hessian,
                   hutchinson_samples, dtype) -> FeatureConfig:
    return FeatureConfig(
        model=model or default_model(data.source, data.input_shape),
        warmup=TrainConfig(epochs=warmup_epochs, batch_size=batch_size, lr=lr),
        posterior_samples=samples, posterior_sigma=sigma, posterior_layers=layers, posterior_kind=kind,
        hessian=hessian, hutchinson_samples=hutchinson_samples, dtype=dtype,
    )


def dataset_record(data: LoadedData, data_root: Optional[str]) -> dict:
    record = {"source": data.source, "split": "train", "num_examples": len(data.train),
              "num_classes": data.num_classes, "fingerprint": data.fingerprint}
    if data_root:
        record["root"] = str(Path(data_root).resolve())
    return record


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
):
    """Warm up a model and store per-sample gradients, Hessian diagonals and embeddings."""
    torch_device = resolve_device(device)
    data, labels, noise, flipped = load_training_data(dataset, data_root, download, label_noise, noise_seed)
    config = feature_config(data, model, warmup_epochs, lr, batch_size, posterior_samples, posterior_sigma,
                            posterior_layers, posterior_kind, hessian, hutchinson_samples, dtype)
    start = time.perf_counter()
    build_store(data, labels, out, config, seed=seed, device=torch_device, label_noise=noise, flipped=flipped)
    console.print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")


@app.command("select")
@user_errors
def select_command(
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
):
    """Select a coreset and write its manifest."""
    if fraction is None and count is None:
        fraction = 0.1
    if method not in METHODS:
        raise PruneError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    torch_device = resolve_device(device)
    options = MethodOptions(max_pool=max_pool, rho=rho, top_k=top_k, top_k_scope=top_k_scope, damping=damping,
                            subset_size=subset_size, learned_loss=learned_loss, learned_window=learned_window)
    if features is not None:
        candidates = Candidates.from_store(FeatureStore.open(features), root=data_root and str(Path(data_root).resolve()))
        source = candidates.dataset["source"]
    else:
        data, labels, noise, flipped = load_training_data(dataset, data_root, download, label_noise, noise_seed)
        source = data.source
        record = dataset_record(data, data_root)
        if method == "random":
            noise_record = noise and {**noise, "flipped": flipped.tolist(), "noisy_labels": labels[flipped].tolist()}
            candidates = Candidates(labels, record, noise_record)
        else:
            config = feature_config(data, model, warmup_epochs, lr, batch_size, posterior_samples, posterior_sigma,
                                    posterior_layers, posterior_kind, hessian, hutchinson_samples, "float32")
            with tempfile.TemporaryDirectory() as tmp:
                path = store or Path(tmp) / "features.h5"
                build_store(data, labels, path, config, seed=seed, device=torch_device, label_noise=noise, flipped=flipped)
                candidates = Candidates.from_store(FeatureStore.open(path), root=record.get("root"))
    start = time.perf_counter()
    manifest = select(candidates, method, fraction=fraction, count=count, balance=balance, seed=seed,
                      options=options, device=torch_device)
    seconds = time.perf_counter() - start
    if out is None:
        budget = f"{fraction:g}" if fraction is not None else f"n{count}"
        out = Path("manifests") / f"{Path(source).stem.replace('npz:', '')}-{method}-{budget}.json"
    manifest.save(out)
    console.print(f"selected {len(manifest)} of {manifest.dataset['num_examples']} examples with {method} "
                  f"in {seconds:.1f} s -> {out}")


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
):
    """Train a fresh model on a manifest's subset (or on the full data) and evaluate it."""
    torch_device = resolve_device(device)
    chosen = Manifest.load(manifest) if manifest else None
    if chosen is not None:
        dataset = dataset or chosen.dataset["source"]
        data_root = data_root or chosen.dataset.get("root")
    data = load_dataset(dataset or "digits", data_root, download)
    labels = data.train.y
    indices = torch.arange(len(labels))
    weights = None
    if chosen is not None:
        warning = chosen.check_dataset(fingerprint=data.fingerprint, num_examples=len(labels), force=force)
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
    test = evaluate(net, data.test.x, data.test.y, device=torch_device)
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
    table.add_row(data.source, subset, model_name, str(epochs), f"{test['accuracy']:.4f}", f"{wall:.1f}")
    console.print(table)
    if metrics:
        write_text(metrics, json.dumps(result, indent=1) + "\n")


@app.command("inspect")
@user_errors
def inspect_command(
    manifest: Path = typer.Argument(..., help="Manifest to summarise."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Check the manifest against this data source."),
    data_root: Optional[str] = DataRoot,
):
    """Summarise a manifest: method, budget, per-class counts; check it against data."""
    chosen = Manifest.load(manifest)
    info = Table(title=str(manifest), show_header=False)
    info.add_row("dataset", f"{chosen.dataset['source']} ({chosen.dataset['num_examples']} examples, "
                 f"{chosen.dataset['num_classes']} classes)")
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
    if dataset:
        data = load_dataset(dataset, data_root)
        chosen.check_dataset(fingerprint=data.fingerprint, num_examples=len(data.train))
        console.print(f"[green]matches[/] {data.source}")


def main() -> None:
    app()
