"""`prune bench`: the evaluation protocol over methods x fractions x label noise x seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from prune.atomic import ensure_writable, output_exists
from prune.bench import BenchConfig, run_bench
from prune.cli.options import (OUTPUT, POSTERIOR, TRAINING, Augment, DataRoot, Dataset, Device, DeviceName, Overwrite,
                               Quiet, Sigma, StrataBudget, amp_option, augment_option, batch_size_option, flag,
                               lr_option, model_option, value, warmup_epochs_option)
from prune.data import source_paths
from prune.errors import PruneError
from prune.training import console, resolve_device


def _items(text: str, name: str) -> tuple[str, ...]:
    """The comma-separated items of ``text`` (none for an empty text); an empty item (``a,,b``, ``a,``) is refused."""
    if not text.strip():
        return ()
    items = tuple(item.strip() for item in text.split(","))
    if not all(items):
        raise PruneError(f"{name} {text!r} has an empty item; separate the values with single commas")
    return items


def _numbers(text: str, name: str, kind=float) -> tuple:
    """The items of ``text`` as ``kind`` (float or int); one that is not is refused, naming the option."""
    try:
        return tuple(kind(v) for v in _items(text, name))
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise PruneError(f"{name} must be comma-separated {what}, got {text!r}") from None


def _out_folder(text: str) -> Path:
    """``--out`` as a path: an empty one is refused (it would mean the current folder)."""
    if not text.strip():
        raise PruneError("--out needs a folder name, got an empty one")
    return Path(text)


GRID = "Grid"


def bench_command(
    # data
    dataset: str = Dataset, data_root: Optional[str] = DataRoot,
    # the grid
    methods: str = typer.Option("random,herding,clean,ccs,craig,adacore,lcmat,ensemble,crest", "--methods", help="Comma-separated methods; craig-mean, adacore-mean, lcmat-mean, crest-mean: the method with --posterior mean (from the store with --posterior-samples); herding-point: herding with --posterior point.", rich_help_panel=GRID),
    fractions: str = typer.Option("0.01,0.05,0.1", "--fractions", help="Comma-separated subset fractions.", rich_help_panel=GRID),
    label_noise: str = typer.Option("0", "--label-noise", help="Comma-separated label-noise fractions.", rich_help_panel=GRID),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds (warm-up, selection, training).", rich_help_panel=GRID),
    dynamic: str = typer.Option("", "--dynamic", help="Comma-separated dynamic kinds (ensemble,crest,random): trained with selection during training at each fraction's backprop budget, reported as dyn-<kind>.", rich_help_panel=GRID),
    drop_hard: Optional[str] = typer.Option(None, "--drop-hard", help="Difficulty stage of every method but random, and inside --dynamic ensemble|crest: auto, a fraction, or 0 (default: each method's own; auto for dynamic).", rich_help_panel=GRID),
    strata: Optional[str] = typer.Option(None, "--strata", help="Difficulty strata of every method but random: auto or N (default: each method's own).", rich_help_panel=GRID),
    strata_budget: Optional[StrataBudget] = typer.Option(None, "--strata-budget", help="equal or proportional budgets over the strata of every method but random (default: each method's own).", rich_help_panel=GRID),
    full: bool = flag("full", "Also train on all the data (the reference row).", default=True, rich_help_panel=GRID),
    weighted: bool = flag("weighted", "Also train every method but random on its weights gamma (rows <method>+γ).", rich_help_panel=GRID),
    # model, warm-up and training
    model: Optional[str] = model_option(TRAINING), warmup_epochs: int = warmup_epochs_option(TRAINING),
    train_epochs: int = typer.Option(40, "--train-epochs", help="Epochs of each fresh training run (40: random has converged within 0.3 points on Fashion-MNIST at 1-10 %; 20 is a fast mode).", rich_help_panel=TRAINING),
    lr: float = lr_option(TRAINING), batch_size: int = batch_size_option(TRAINING),
    augment: Augment = augment_option(TRAINING), amp: bool = amp_option(TRAINING),
    # posterior
    posterior_samples: int = typer.Option(4, "--posterior-samples", help="M for the store of ensemble and the -mean rows.", rich_help_panel=POSTERIOR),
    posterior_sigma: float = Sigma,
    # output
    out: str = typer.Option(..., "--out", metavar="PATH", help="Folder for cells, stores, results.{csv,json,md,png}.", rich_help_panel=OUTPUT),
    resume: bool = flag("resume", "Continue in an existing --out: reuse the cells made with exactly these settings, compute the rest.", rich_help_panel=OUTPUT),
    overwrite: bool = Overwrite, device: DeviceName = Device, quiet: bool = Quiet,
):
    """Evaluate methods x fractions x label noise x seeds; write tables and plots."""
    device, out = value(device), _out_folder(out)
    config = BenchConfig(
        dataset=dataset, out=out, data_root=data_root, methods=_items(methods, "--methods"),
        fractions=_numbers(fractions, "--fractions"), label_noise=_numbers(label_noise, "--label-noise"),
        seeds=_numbers(seeds, "--seeds", int), model=model, warmup_epochs=warmup_epochs,
        train_epochs=train_epochs, lr=lr, batch_size=batch_size, augment=value(augment), amp=amp,
        posterior_samples=posterior_samples,
        posterior_sigma=posterior_sigma, dynamic=_items(dynamic, "--dynamic"),
        drop_hard=drop_hard, strata=strata, strata_budget=value(strata_budget), full=full, weighted=weighted,
    )
    config.check()  # the lists and --out before the output policy (run_bench checks again, for the API)
    if resume and overwrite:
        raise PruneError("--resume reuses the finished cells in --out and --overwrite recomputes them; give one of them")
    if resume and not output_exists(out):
        raise PruneError(f"--resume: {out} holds no earlier run to resume; leave out --resume to start")
    ensure_writable(out, inputs=source_paths(dataset, data_root), folder=True, overwrite=resume or overwrite)
    run_bench(config, resolve_device(device), reuse=resume)
    console.print(f"results: {out / 'results.md'}, {out / 'results.png'}")
