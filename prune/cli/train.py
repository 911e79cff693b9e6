"""`prune train`: train a fresh model on a manifest's subset, on all data, or with dynamic selection."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.markup import escape
from rich.table import Table

from prune.api import dataset_record, load_recorded, load_training_data, recorded_options, source_options
from prune.atomic import ensure_writable, finishing, save_torch, write_text
from prune.cli.options import (DATA, OUTPUT, POSTERIOR, TRAINING, Augment, DataRoot, Device, DeviceName, Download,
                               EvalSplit, FeatureColumn, ImageColumn, ImageSize, LabelColumn, LabelNoise, Layers,
                               NoiseSeed, Overwrite, PosteriorLayers, Quiet, Sigma, SkipBad, Split, amp_option,
                               augment_option, batch_size_option, checkpoint_option, choice, flag, lr_option,
                               model_option, seed_option, value)
from prune.data import source_paths
from prune.dynamic import DYNAMIC_KINDS, UPDATE_RULES, DynamicConfig, replay, run_dynamic, subset_log
from prune.selection import random_subset
from prune.selection.difficulty import parse_drop_hard
from prune.errors import PruneError
from prune.manifest import Manifest, dataset_mismatch
from prune.models import checkpoint_record, default_model
from prune.training import ModelSpec, TrainConfig, check_amp, console, fit_and_test, resolve_device


DYNAMIC = "Dynamic selection"
DynamicKind = choice("DynamicKind", DYNAMIC_KINDS)
UpdateRule = choice("UpdateRule", UPDATE_RULES)
Baseline = choice("Baseline", ("random",))


def train_command(
    # data
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Train on this manifest's subset.", rich_help_panel=DATA),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data source (default: the manifest's, else digits).", rich_help_panel=DATA),
    data_root: Optional[str] = DataRoot, download: bool = Download,
    split: Optional[str] = Split, image_column: Optional[str] = ImageColumn, label_column: Optional[str] = LabelColumn,
    feature_column: Optional[str] = FeatureColumn, eval_split: Optional[str] = EvalSplit,
    image_size: Optional[int] = ImageSize, skip_bad: bool = SkipBad,
    label_noise: float = LabelNoise, noise_seed: int = NoiseSeed,
    force: bool = flag("force", "Train even if the data do not match the manifest.", rich_help_panel=DATA),
    # model and training
    model: Optional[str] = model_option(TRAINING), checkpoint: Optional[Path] = checkpoint_option(TRAINING),
    epochs: int = typer.Option(20, "--epochs", help="Training epochs.", rich_help_panel=TRAINING),
    lr: float = lr_option(TRAINING), batch_size: int = batch_size_option(TRAINING),
    weighted: bool = flag("weighted", "Weight each example by its gamma.", rich_help_panel=TRAINING),
    augment: Augment = augment_option(TRAINING), amp: bool = amp_option(TRAINING),
    baseline: Optional[Baseline] = typer.Option(None, "--baseline", help="--manifest: also train on a class-balanced random subset with the manifest's per-class counts (same seed and schedule) and show the difference.", rich_help_panel=TRAINING),
    # dynamic selection
    dynamic: Optional[DynamicKind] = typer.Option(None, "--dynamic", help="Select mini-batch coresets during training (README, \"Dynamic selection\").", rich_help_panel=DYNAMIC),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="--dynamic: fraction of full-data backprops, f * n * epochs in all (default 0.1).", rich_help_panel=DYNAMIC),
    every: int = typer.Option(1, "--every", help="--dynamic: re-select every R epochs (update rule every).", rich_help_panel=DYNAMIC),
    subset_size: int = typer.Option(500, "--subset-size", help="--dynamic: size r of each random subset a coreset is selected from.", rich_help_panel=DYNAMIC),
    update_rule: UpdateRule = typer.Option("every", "--update-rule", help="--dynamic: every (each R epochs) or crest (quadratic-approximation rule).", rich_help_panel=DYNAMIC),
    tau: float = typer.Option(0.05, "--tau", help="--update-rule crest: re-select when rho > tau.", rich_help_panel=DYNAMIC),
    learned_loss: float = typer.Option(0.0, "--learned-loss", help="--dynamic: drop examples whose loss stayed below this (0 = keep all).", rich_help_panel=DYNAMIC),
    learned_window: int = typer.Option(2, "--learned-window", help="--dynamic: selections the loss must stay low to drop an example.", rich_help_panel=DYNAMIC),
    drop_hard: str = typer.Option("auto", "--drop-hard", help="--dynamic ensemble|crest: difficulty stage in each subset, on the current model: auto (leave out the examples whose label its posterior mean believes less than chance), a fraction, or 0.", rich_help_panel=DYNAMIC),
    posterior_samples: Optional[int] = typer.Option(None, "--posterior-samples", help="--dynamic ensemble: M posterior samples (default 4).", rich_help_panel=POSTERIOR),
    posterior_sigma: float = Sigma, posterior_layers: PosteriorLayers = Layers,
    # output
    metrics: Optional[Path] = typer.Option(None, "--metrics", help="Write test accuracy, timings and history as JSON.", rich_help_panel=OUTPUT),
    log: Optional[Path] = typer.Option(None, "--log", help="--dynamic: write the subset log here (replay it with --manifest).", rich_help_panel=OUTPUT),
    save_model: Optional[Path] = typer.Option(None, "--save-model", help="Save the trained weights (a state_dict, torch.save) for --checkpoint.", rich_help_panel=OUTPUT),
    overwrite: bool = Overwrite,
    seed: int = seed_option("Seed for the model's initialisation and batch order (and, with --dynamic, the subsets and posterior draws)."),
    device: DeviceName = Device, quiet: bool = Quiet,
):
    """Train a fresh model on a manifest's subset (or on the full data) and evaluate it."""
    device, dynamic, augment = value(device), value(dynamic), value(augment)
    posterior_layers, update_rule, baseline = value(posterior_layers), value(update_rule), value(baseline)
    replaying = manifest is not None and subset_log.is_subset_log(manifest)
    if (dynamic is not None or replaying) and (checkpoint is not None or save_model is not None or augment != "none" or amp):
        raise PruneError("--checkpoint, --save-model, --augment and --amp apply to static training; drop them with --dynamic "
                         "(or when replaying a subset log)")
    if baseline is not None and (manifest is None or dynamic is not None or replaying):
        raise PruneError("--baseline random compares a manifest's subset with a random one: give a manifest of "
                         "`prune select` (dynamic runs compare with `--dynamic random`)")
    if label_noise and manifest is not None:
        raise PruneError("a manifest (or subset log) records the labels it was made with; drop --label-noise")
    if dynamic is not None or replaying:
        train_dynamic(dynamic=dynamic, manifest=manifest, dataset=dataset, data_root=data_root, download=download,
                      label_noise=label_noise, noise_seed=noise_seed,
                      model=model, epochs=epochs, lr=lr, batch_size=batch_size, weighted=weighted, force=force,
                      metrics=metrics, overwrite=overwrite, seed=seed, device=device,
                      source_options=source_options(split, image_column, label_column, feature_column, image_size,
                                                    skip_bad),
                      eval_split=eval_split,
                      fraction=fraction, every=every, subset_size=subset_size, posterior_samples=posterior_samples,
                      posterior_sigma=posterior_sigma, posterior_layers=posterior_layers, update_rule=update_rule,
                      tau=tau, learned_loss=learned_loss, learned_window=learned_window, drop_hard=drop_hard, log=log)
        return
    if fraction is not None or log is not None:
        raise PruneError("--fraction and --log belong to dynamic training; add --dynamic ensemble|crest|random "
                         "(or select a static subset with `prune select --fraction`)")
    torch_device = resolve_device(device)
    inputs = [manifest, checkpoint, *source_paths(dataset, data_root)]
    if metrics:  # fail now, not after training
        ensure_writable(metrics, inputs=inputs, overwrite=overwrite)
    if save_model:  # and not on the path of another output of this run
        ensure_writable(save_model, inputs=[*inputs, metrics], overwrite=overwrite)
    chosen = Manifest.load(manifest) if manifest else None
    options = source_options(split, image_column, label_column, feature_column, image_size, skip_bad)
    if chosen is not None:
        if (dataset or chosen.dataset["source"]).startswith(("hf:", "folder:")):  # the manifest's split and columns (image size), unless given
            recorded = recorded_options(chosen.dataset)
            if "image_column" in options or "feature_column" in options:
                recorded.pop("image_column", None), recorded.pop("feature_column", None)
            options = {**recorded, **options}
        data = load_recorded(chosen.dataset, dataset, data_root, download, eval_split=eval_split, **options)
        labels, noise = data.train.y, None
    else:
        data, labels, noise, _ = load_training_data(dataset or "digits", data_root, download, label_noise, noise_seed,
                                                    eval_split=eval_split, **options)
    say_held_out(data)
    indices = torch.arange(len(labels))
    weights = None
    if chosen is not None:
        counts = torch.bincount(labels, minlength=data.num_classes).tolist()
        warning = chosen.check_dataset(fingerprint=data.fingerprint, num_examples=len(labels), force=force,
                                       class_counts=counts, files_fingerprint=data.record().get("files_fingerprint"))
        if warning:
            console.print(f"[yellow]warning:[/] {escape(warning)}")
        labels = torch.from_numpy(chosen.training_labels(labels.numpy()))
        indices = torch.from_numpy(chosen.indices)
        if weighted:
            weights = torch.from_numpy(chosen.weights)
        if model is None and chosen.model:
            model = chosen.model.get("features", {}).get("model")
    model_name = model or default_model(data.source, data.input_shape)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, augment=augment, amp=check_amp(amp, torch_device))
    subset = f"{chosen.method['name']} {len(indices)}" if chosen else f"full {len(indices)}"
    run, net = _train_and_test(data, labels, indices, weights, model_name, config, seed, torch_device, checkpoint)
    runs = {subset: run}
    result = {**run, "epochs": epochs, "model": model_name, "weighted": weighted, "seed": seed,
              "manifest": str(manifest) if manifest else None, "dataset": data.source, "eval_split": data.eval_split,
              "train": config.to_dict(), "label_noise": noise, "augment": augment, "amp": amp,
              "checkpoint": checkpoint_record(checkpoint) if checkpoint else None}
    if baseline is not None:  # the manifest's per-class counts drawn uniformly; the same seed and schedule
        picked = random_subset(labels, chosen.per_class, seed)
        gamma = None
        if weighted:  # random's gamma: how many examples of its class each pick stands for
            sizes = torch.bincount(labels, minlength=len(chosen.per_class)).double()
            gamma = (sizes / torch.tensor(chosen.per_class, dtype=torch.float64).clamp_min(1))[labels[picked]]
        runs[f"random {len(picked)}"] = result["baseline"] = _train_and_test(
            data, labels, picked, gamma, model_name, config, seed, torch_device, checkpoint)[0]
        ours, theirs = result["test_accuracy"], result["baseline"]["test_accuracy"]
        result["difference"] = None if ours is None else ours - theirs
    table = Table(title="prune train")
    for column in ("dataset", "subset", "model", "epochs", "test accuracy", "seconds"):
        table.add_column(column)
    for name, run in runs.items():
        accuracy = "-" if run["test_accuracy"] is None else f"{run['test_accuracy']:.4f}"
        cells = (data.source, name, model_name, str(epochs), accuracy, f"{run['wall_seconds']:.1f}")
        table.add_row(*map(escape, cells))
    console.print(table)
    if result.get("difference") is not None:
        console.print(f"{chosen.method['name']} - random: {100 * result['difference']:+.2f} points "
                      f"({100 * result['test_accuracy']:.2f} % against {100 * result['baseline']['test_accuracy']:.2f} %"
                      f", seed {seed})", highlight=False)
    with finishing():
        if save_model:
            save_torch({k: v.detach().cpu() for k, v in net.state_dict().items()}, save_model, overwrite=overwrite)
        if metrics:
            write_text(metrics, json.dumps(result, indent=1) + "\n", overwrite=overwrite)


def say_held_out(data) -> None:
    """Name the split test accuracy comes from where the source has a choice (hf:), or say there is none."""
    if data.source.startswith("hf:") and data.eval_split is not None:
        console.print(f"test accuracy on split {escape(repr(data.eval_split))} ({len(data.test)} examples)", highlight=False)
    elif data.source.startswith("hf:"):
        console.print(f"[yellow]note:[/] {escape(data.source)} has no test or validation split; no test accuracy to "
                      "report (--eval-split NAME holds out another split)", highlight=False)
    elif not len(data.test):
        console.print(f"[yellow]note:[/] {escape(data.source)} has no test split; no test accuracy to report",
                      highlight=False)


def _train_and_test(data, labels, indices, weights, model_name: str, config: TrainConfig, seed: int, device,
                    checkpoint: Path | None = None) -> tuple[dict, torch.nn.Module]:
    """``prune.training.fit_and_test``, split into its record and the trained model."""
    run = fit_and_test(data, labels, indices, config, ModelSpec(model_name, checkpoint), seed=seed, device=device,
                       weights=weights)
    return run, run.pop("model")


def train_dynamic(*, dynamic: str | None, manifest, dataset: str | None, data_root, download: bool, label_noise: float,
                  noise_seed: int, model: str | None,
                  epochs: int, lr: float, batch_size: int, weighted: bool, force: bool, metrics, overwrite: bool, seed: int,
                  device: str, source_options: dict, eval_split: str | None, fraction: float | None, every: int,
                  subset_size: int, posterior_samples: int | None, posterior_sigma: float, posterior_layers: str, update_rule: str,
                  tau: float, learned_loss: float, learned_window: int, drop_hard: str, log) -> dict:
    """``prune train --dynamic KIND`` (a dynamic run) or ``prune train --manifest LOG`` (its replay)."""
    torch_device = resolve_device(device)
    if dynamic is not None and manifest is not None:
        raise PruneError("--dynamic selects during training and --manifest trains on a saved subset; give one of them")
    inputs = [manifest, *source_paths(dataset, data_root)]
    if log is not None:
        ensure_writable(log, inputs=[*inputs, metrics], overwrite=overwrite)
    if metrics is not None:
        ensure_writable(metrics, inputs=inputs, overwrite=overwrite)
    if manifest is not None:  # replay a subset log
        if log is not None:
            raise PruneError("--log writes the log of a --dynamic run; a replay (--manifest LOG) writes none")
        recorded = subset_log.load(manifest)
        record = recorded["dataset"]
        options = {**recorded_options(record), **source_options} if str(record["source"]).startswith(("hf:", "folder:")) else source_options
        data = load_recorded(record, dataset, data_root, download, what="subset log", eval_split=eval_split, **options)
        say_held_out(data)
        counts = torch.bincount(data.train.y, minlength=data.num_classes).tolist()
        problem = dataset_mismatch(record, fingerprint=data.fingerprint, num_examples=len(data.train),
                                   class_counts=counts, what="subset log")
        if problem is not None:
            message = f"subset log was made for {record['source']!r} but the data given does not match: {problem}"
            if not force:
                raise PruneError(message + "; pass the dataset the log was made from, or --force")
            beyond = subset_log.beyond(recorded, len(data.train))
            if beyond:
                raise PruneError(f"{message}; {beyond} of its indices and flipped labels lie beyond the "
                                 f"{len(data.train)} examples given, so not even --force can use it")
            console.print(f"[yellow]warning:[/] {escape(message)} (continuing because of --force)")
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
        data, labels, noise, _ = load_training_data(dataset or "digits", data_root, download, label_noise,
                                                    noise_seed, eval_split=eval_split, **source_options)
        say_held_out(data)
        model_name = model or default_model(data.source, data.input_shape)
        cfg = DynamicConfig(kind=dynamic, fraction=0.1 if fraction is None else fraction, epochs=epochs,
                            batch_size=batch_size, lr=lr, subset_size=subset_size, every=every,
                            update_rule=update_rule, tau=tau, posterior_samples=posterior_samples,
                            posterior_sigma=posterior_sigma, posterior_layers=posterior_layers, weighted=weighted,
                            learned_loss=learned_loss, learned_window=learned_window, drop_hard=parse_drop_hard(drop_hard))
        cfg.check()
        if subset_size > len(data.train):
            console.print(f"[yellow]note:[/] --subset-size {subset_size} exceeds the {len(data.train)} training "
                          "examples; each subset is the whole training set", highlight=False)
        start = time.perf_counter()
        result = run_dynamic(data, cfg, model_name=model_name, seed=seed, device=torch_device, labels=labels,
                             dataset_record=dataset_record(data, data_root), description=f"dynamic {dynamic}")
        wall = time.perf_counter() - start
        if log is not None:
            with finishing():
                subset_log.save(result.log, log, overwrite=overwrite)
        kind, run_epochs, fraction_used, run_seed = dynamic, epochs, cfg.fraction, seed
        r = result.log["result"]
        extra = {"selections": r["selections"], "forward_examples": r["forward_examples"],
                 "selection_seconds": result.timings["selection_seconds"],
                 "selection_point_seconds": result.timings["selection_point_seconds"], "log": str(log) if log else None,
                 "checks": len(result.log["checks"]), "label_noise": noise}
    test = result.test
    n = len(data.train)
    out = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "dynamic": kind, "fraction": fraction_used,
           "backprops": result.backprops, "full_data_backprops": n * run_epochs,
           "train_examples": len({i for p in result.log["selections"] for b in p["batches"] for i in b}),
           "epochs": run_epochs, "wall_seconds": wall, "model": model_name, "weighted": bool(weighted), "seed": run_seed,
           "manifest": str(manifest) if manifest else None, "dataset": data.source, "eval_split": data.eval_split,
           **extra,
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
        with finishing():
            write_text(metrics, json.dumps(out, indent=1) + "\n", overwrite=overwrite)
    return out
