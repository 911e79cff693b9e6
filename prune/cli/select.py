"""`prune select`: select a coreset and write its manifest (or, with --dry-run, print the plan)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from prune import distributed
from prune import api
from prune.api import check_outputs
from prune.atomic import finishing, refuse_existing
from prune.cli.options import (ADVANCED, BUDGET, DATA, METHOD, OUTPUT, DataRoot, Dataset, Device, DeviceName,
                               DifficultyScore, StrataBudget, StrataBudgets, Download, DropHard, FeatureColumn, Hessian,
                               HessianKind, HutchinsonSamples, ImageColumn, Kind, LabelColumn, LabelNoise, Layers,
                               NoiseSeed, Overwrite, PosteriorKind, PosteriorLayers, Quiet, Samples, Schedule, Score,
                               Seed, Sigma, Split, Strata, batch_size_option, choice, flag, given, lr_option,
                               model_option, value, warmup_epochs_option, warmup_schedule_option, Augment, ImageSize,
                               SkipBad, amp_option, augment_option, checkpoint_option)
from prune.config import DATA as DATA_OPTIONS, POSTERIOR as POSTERIOR_OPTIONS, WARMUP as WARMUP_OPTIONS
from prune.errors import PruneError
from prune.data.sources import source_stem
from prune.selection import BALANCES, METHODS, Budget, MethodConfig, SelectionPlan, method_class
from prune.selection.methods import POSTERIORS, TOP_K_SCOPES
from prune.selection.field.ranking import KEEPS
from prune.training import console


Method = choice("Method", METHODS)
Balance = choice("Balance", BALANCES)
TopKScope = choice("TopKScope", TOP_K_SCOPES)
Posterior = choice("Posterior", POSTERIORS)
Keep = choice("Keep", KEEPS)


def select_command(
    ctx: typer.Context,
    # data
    dataset: str = Dataset, data_root: Optional[str] = DataRoot, download: bool = Download,
    split: Optional[str] = Split, image_column: Optional[str] = ImageColumn, label_column: Optional[str] = LabelColumn,
    feature_column: Optional[str] = FeatureColumn, label_noise: float = LabelNoise, noise_seed: int = NoiseSeed,
    image_size: Optional[int] = ImageSize, skip_bad: bool = SkipBad,
    features: Optional[Path] = typer.Option(None, "--features", help="Select from this feature store (no model is run).",
                                            rich_help_panel=DATA),
    # model, warm-up and posterior: the features computed when --features is not given
    model: Optional[str] = model_option(), checkpoint: Optional[Path] = checkpoint_option(),
    warmup_epochs: int = warmup_epochs_option(), lr: float = lr_option(),
    batch_size: int = batch_size_option(), warmup_schedule: Schedule = warmup_schedule_option(),
    augment: Augment = augment_option(), amp: bool = amp_option(),
    posterior_samples: int = Samples, posterior_sigma: float = Sigma,
    posterior_layers: PosteriorLayers = Layers,
    # method
    method: Method = typer.Option(MethodConfig.name, "--method", help="Selection method; formulas, defaults and references in docs/methods.md (herding, the default, picks per class a subset whose last-layer gradients are distributed as the class's, after dropping the labels the warm model disbelieves).",
                                  rich_help_panel=METHOD),
    posterior: Optional[Posterior] = typer.Option(None, "--posterior", help="Distance methods: from the features at the unperturbed warm weights (point) or averaged over the store's posterior samples (mean). Default: mean for herding and ensemble (ensemble is craig with mean), point for the others. The difficulty stage always averages over the samples.", rich_help_panel=METHOD),
    max_pool: int = typer.Option(MethodConfig.max_pool, "--max-pool", help="Largest pool one greedy run sees; larger classes are split at random.", rich_help_panel=METHOD),
    rho: float = typer.Option(MethodConfig.rho, "--rho", help="lcmat: weight of the curvature term.", rich_help_panel=METHOD),
    top_k: int = typer.Option(MethodConfig.top_k, "--top-k", help="lcmat: Hessian coordinates matched (largest variance).", rich_help_panel=METHOD),
    damping: float = typer.Option(MethodConfig.damping, "--damping", help="adacore: eps = damping * mean Hessian diagonal.", rich_help_panel=METHOD),
    subset_size: int = typer.Option(MethodConfig.subset_size, "--subset-size", help="crest: size r of the random subsets.", rich_help_panel=METHOD),
    keep: Optional[Keep] = typer.Option(None, "--keep", help="Score methods (el2n, grand, forgetting, aum, entropy, least_confidence): keep the hardest or the easiest examples of each class by the score. Default: each paper's side, hard, but easy for aum (docs/methods.md).", rich_help_panel=METHOD),
    # the difficulty stage
    drop_hard: Optional[str] = DropHard, strata: Optional[str] = Strata, strata_budget: Optional[StrataBudget] = StrataBudgets,
    difficulty_score: Optional[DifficultyScore] = Score,
    # budget
    fraction: Optional[float] = typer.Option(None, "--fraction", help="Fraction of the training split to keep (default 0.1).", rich_help_panel=BUDGET),
    count: Optional[int] = typer.Option(None, "--count", help="Number of examples to keep (instead of --fraction).", rich_help_panel=BUDGET),
    balance: Balance = typer.Option(Budget.balance, "--balance", help="proportional keeps the class shares; equal gives every class the same count.", rich_help_panel=BUDGET),
    # output
    out: Optional[Path] = typer.Option(None, "--out", help="Manifest to write; default manifests/<dataset>-<method>-<budget>.json.", rich_help_panel=OUTPUT),
    store: Optional[Path] = typer.Option(None, "--store", help="Keep the features computed here (default: a temporary file).", rich_help_panel=OUTPUT),
    dry_run: bool = flag("dry-run", "Print the plan (budget per class, pools, memory) and stop: no model is run, nothing is written.", rich_help_panel=OUTPUT),
    overwrite: bool = Overwrite, seed: int = Seed, device: DeviceName = Device, quiet: bool = Quiet,
    # the papers' ablations (the "Advanced" panel, listed last)
    posterior_kind: PosteriorKind = Kind, hessian: HessianKind = Hessian, hutchinson_samples: int = HutchinsonSamples,
    top_k_scope: TopKScope = typer.Option(MethodConfig.top_k_scope, "--top-k-scope", help="lcmat: choose the top-K per class (the authors' code; the default, not worse on digits) or over all data (the paper's text).", rich_help_panel=ADVANCED),
    hessian_batch: int = typer.Option(MethodConfig.hessian_batch, "--hessian-batch", help="adacore: examples per mini-batch over which the Hessian diagonal is averaged (AdaCore §5.2, b_H); 1 = each example's own.", rich_help_panel=ADVANCED),
    learned_loss: float = typer.Option(MethodConfig.learned_loss, "--learned-loss", help="crest with --learned-window: loss below which an example counts as learned.", rich_help_panel=ADVANCED),
    learned_window: int = typer.Option(MethodConfig.learned_window, "--learned-window", help="crest: warm-up checkpoints the loss must stay below --learned-loss to drop an example (0 = keep all: the default, since a static subset trains a fresh model).", rich_help_panel=ADVANCED),
):
    """Select a coreset and write its manifest."""
    method, balance, device = value(method), value(balance), value(device)
    # under torchrun the ranks share the greedy runs over a store (prune.selection.coreset); rank 0 writes.
    # Anything else (features to compute first, a sampling method, a dry run) is rank 0's alone.
    shared = features is not None and not dry_run and method_class(method).needs_features
    if not shared and distributed.launched_rank() != 0:
        return
    world = distributed.start() if shared else distributed.World()
    if fraction is None and count is None:
        fraction = 0.1
    if features is not None and store is not None:
        raise PruneError("--store keeps the features prune computes, but --features gives them (no model is run): "
                         "drop --store")
    if not dry_run:  # fail now, not after the warm-up
        check_outputs(out, store, dataset=dataset, data_root=data_root, features=features, checkpoint=checkpoint,
                      overwrite=overwrite)
        if out is None and not overwrite:  # the default (written, and its folder made, at the end)
            refuse_existing(default_out(dataset, features, method, fraction, count))
    # the data, warm-up and posterior options as given (None: the configs' defaults); --dataset with
    # --features checks the store against that dataset (its default means "the store's")
    computed = given(ctx, ("dataset", *DATA_OPTIONS, *WARMUP_OPTIONS, *POSTERIOR_OPTIONS))
    start = time.perf_counter()
    manifest = api.select_coreset(  # the Python API's keyword alias, with the same names as these options
        computed.pop("dataset") or (dataset if features is None else None), method, **computed, fraction=fraction,
        count=count, balance=balance, seed=seed, features=features, store=store, dry_run=dry_run, overwrite=overwrite,
        drop_hard=drop_hard, strata=strata, strata_budget=value(strata_budget),
        difficulty_score=value(difficulty_score), device=device, max_pool=max_pool, rho=rho, top_k=top_k,
        top_k_scope=value(top_k_scope), damping=damping, hessian_batch=hessian_batch, subset_size=subset_size,
        learned_loss=learned_loss, learned_window=learned_window, posterior=value(posterior), keep=value(keep))
    seconds = time.perf_counter() - start
    if not world.main:
        distributed.stop()
        return
    out = out or default_out(dataset, features, method, fraction, count)
    if dry_run:
        print_plan(manifest, out)
        return
    with finishing():
        manifest.save(out, overwrite=overwrite)
    console.print(f"selected {len(manifest)} of {manifest.dataset['num_examples']} examples with {method} "
                  f"in {seconds:.1f} s -> {out}")
    distributed.stop()  # the other ranks wait here until the manifest is written


def default_out(dataset: str, features: Path | None, method: str, fraction: float | None, count: int | None) -> Path:
    """Where a manifest goes without --out: manifests/<dataset>-<method>-<budget>.json (the store's dataset
    with --features)."""
    source = dataset
    if features is not None:
        import h5py

        source = Path(features).stem  # unless the store's dataset record names its source
        try:  # one attribute; the store itself is checked when it is opened
            with h5py.File(features, "r") as file:
                record = json.loads(file.attrs["dataset"])
            if isinstance(record, dict) and isinstance(record.get("source"), str):
                source = record["source"]
        except (OSError, KeyError, ValueError, TypeError):
            pass
    budget = f"{fraction:g}" if fraction is not None else f"n{count}"
    return Path("manifests") / f"{source_stem(source)}-{method}-{budget}.json"


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
                      + ("" if plan.exact_pools else " (sized before examples are dropped)"), highlight=False)
    console.print(f"memory: about {_size(plan.memory_bytes)} at the peak: {_size(plan.resident_bytes)} now (Python, "
                  f"torch, the data), features still to compute {_size(plan.feature_bytes)}, distances of the largest "
                  f"pool {_size(plan.distance_bytes)}", highlight=False)
    console.print(f"dry run: no model was run and nothing was written (the manifest would go to {out})", highlight=False)
