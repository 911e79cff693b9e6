"""`prune train`: train a fresh model on a manifest's subset, on all data, or with dynamic selection.

The command turns its options into ``prune.config`` objects, calls ``prune.api.train`` and prints
the result; options that have no place in the configs of the mode chosen (static training, a
dynamic run, the replay of a subset log) are refused, not ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from prune import api
from prune.atomic import ensure_writable, finishing, save_torch, write_text
from prune.cli.options import (DATA, OUTPUT, POSTERIOR, TRAINING, Augment, DataRoot, Device, DeviceName, Download,
                               EvalSplit, FeatureColumn, ImageColumn, ImageSize, LabelColumn, LabelNoise, Layers,
                               NoiseSeed, Overwrite, PosteriorLayers, Quiet, Sigma, SkipBad, Split, amp_option,
                               augment_option, batch_size_option, checkpoint_option, choice, flag, lr_option,
                               model_option, seed_option, value)
from prune.config import DataSpec
from prune.data import source_paths
from prune.dynamic import DYNAMIC_KINDS, UPDATE_RULES, DynamicConfig, subset_log
from prune.errors import PruneError
from prune.selection.difficulty import parse_drop_hard
from prune.training import ModelSpec, TrainConfig, console


DYNAMIC = "Dynamic selection"
DynamicKind = choice("DynamicKind", DYNAMIC_KINDS)
UpdateRule = choice("UpdateRule", UPDATE_RULES)
Baseline = choice("Baseline", ("random",))

#: the options of each mode's configs that the other modes have no place for
STATIC_ONLY = ("checkpoint", "save_model", "augment", "amp")
DYNAMIC_ONLY = ("fraction", "every", "subset_size", "update_rule", "tau", "learned_loss", "learned_window", "drop_hard",
                "posterior_samples", "posterior_sigma", "posterior_layers", "log")
FROM_THE_LOG = ("model", "epochs", "lr", "batch_size", "weighted", "seed")


def train_command(
    ctx: typer.Context,
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
    replaying = dynamic is None and manifest is not None and subset_log.is_subset_log(manifest)
    refuse_unused(ctx, "dynamic" if dynamic is not None else "replay" if replaying else "static")
    inputs = [manifest, checkpoint, *source_paths(dataset, data_root)]
    for output, others in ((metrics, []), (save_model, [metrics]), (log, [metrics])):  # fail now, not after training
        if output is not None:  # nor on the path of an input or of another output of this run
            ensure_writable(output, inputs=[*inputs, *others], overwrite=overwrite)
    source = {} if dataset is None and manifest is None else {"source": dataset}  # None: the manifest's
    data = DataSpec(**source, data_root=data_root, download=download, split=split, image_column=image_column,
                    label_column=label_column, feature_column=feature_column, eval_split=eval_split,
                    image_size=image_size, skip_bad=skip_bad, label_noise=label_noise, noise_seed=noise_seed)
    if dynamic is not None:
        config = DynamicConfig(
            kind=value(dynamic), **({} if fraction is None else {"fraction": fraction}), epochs=epochs,
            batch_size=batch_size, lr=lr, subset_size=subset_size, every=every, update_rule=value(update_rule),
            tau=tau, posterior_samples=posterior_samples, posterior_sigma=posterior_sigma,
            posterior_layers=value(posterior_layers), weighted=weighted, learned_loss=learned_loss,
            learned_window=learned_window, drop_hard=parse_drop_hard(drop_hard))
    elif not replaying:
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, augment=value(augment), amp=amp,
                             weighted=weighted)
    else:  # the log holds the settings
        config = None
    result = api.train(data, config, manifest=manifest, model=ModelSpec(model, checkpoint), baseline=value(baseline),
                       force=force, seed=seed, device=value(device))
    if result.log is None:
        print_static(result)
    else:
        print_dynamic(result)
    with finishing():
        if save_model:
            save_torch({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, save_model,
                       overwrite=overwrite)
        if log is not None:
            subset_log.save(result.log, log, overwrite=overwrite)
            result.record["log"] = str(log)
        if metrics:
            write_text(metrics, json.dumps(result.record, indent=1) + "\n", overwrite=overwrite)
    if log is not None:
        console.print(f"subset log -> {log}", highlight=False)


def refuse_unused(ctx: typer.Context, mode: str) -> None:
    """Refuse the options set (to other than their defaults) that ``mode``'s configs have no place for."""
    flags = {param.name: param.opts[0] for param in ctx.command.params}
    changed = [name for name in flags if name in ctx.params and ctx.params[name] != _default(ctx, name)]

    def given(names) -> list[str]:
        return [flags[name] for name in changed if name in names]

    if mode != "static" and given(STATIC_ONLY):
        raise PruneError("--checkpoint, --save-model, --augment and --amp apply to static training; drop them with "
                         "--dynamic (or when replaying a subset log)")
    if mode == "replay" and given(("log",)):
        raise PruneError("--log writes the log of a --dynamic run; a replay (--manifest LOG) writes none")
    if mode == "replay" and given(FROM_THE_LOG + DYNAMIC_ONLY):
        raise PruneError(f"a replay takes its model, seed, epochs, lr, batches and selections from the subset log: "
                         f"drop {', '.join(given(FROM_THE_LOG + DYNAMIC_ONLY))}")
    if mode == "static" and given(DYNAMIC_ONLY):
        names = given(DYNAMIC_ONLY)
        raise PruneError(f"{', '.join(names)} {'belongs' if len(names) == 1 else 'belong'} to dynamic training; add "
                         "--dynamic ensemble|crest|random" + (" (or select a static subset with `prune select "
                                                              "--fraction`)" if "--fraction" in names else ""))


def _default(ctx: typer.Context, name: str):
    """The default of option ``name`` as the command receives it (a choice's default as its member's name)."""
    default = next(param.default for param in ctx.command.params if param.name == name)
    return getattr(default, "value", default)


def print_static(result: api.TrainResult) -> None:
    """The table of a static run (and of its random baseline), and their difference."""
    record = result.record
    table = Table(title="prune train")
    for column in ("dataset", "subset", "model", "epochs", "test accuracy", "training seconds"):  # start-up left out
        table.add_column(column)
    for run in (result, result.baseline):
        if run is not None:
            accuracy = "-" if run.test_accuracy is None else f"{run.test_accuracy:.4f}"
            cells = (record["dataset"], f"{run.subset} {run.train_examples}", result.model_name,
                     str(record["epochs"]), accuracy, f"{run.wall_seconds:.1f}")
            table.add_row(*map(escape, cells))
    console.print(table)
    if result.difference is not None:
        console.print(f"{result.subset} - random: {100 * result.difference:+.2f} points "
                      f"({100 * result.test_accuracy:.2f} % against {100 * result.baseline.test_accuracy:.2f} %"
                      f", seed {record['seed']})", highlight=False)


def print_dynamic(result: api.TrainResult) -> None:
    """The table of a dynamic run or of a subset log's replay."""
    record = result.record
    steps = record["full_data_backprops"]
    table = Table(title="prune train (dynamic)")
    for column in ("dataset", "selection", "model", "epochs", "backprops", "test accuracy",
                   "seconds (selection, training, test)"):
        table.add_column(column)
    accuracy = "-" if result.test_accuracy is None else f"{result.test_accuracy:.4f}"
    table.add_row(record["dataset"], f"{record['dynamic']} {float(record['fraction']):g}", result.model_name,
                  str(record["epochs"]), f"{result.backprops} ({result.backprops / steps:.1%})", accuracy,
                  f"{record['wall_seconds']:.1f}")
    console.print(table)
