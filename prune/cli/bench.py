"""`prune bench`: the evaluation protocol over methods x fractions x label noise x seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from prune.bench import BenchConfig, run_bench
from prune.cli.options import BatchSize, DataRoot, Dataset, Device, LearningRate, Model, Sigma, WarmupEpochs
from prune.errors import PruneError
from prune.training import console, resolve_device


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise PruneError(f"{name} must be comma-separated numbers, got {text!r}") from None


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
    drop_hard: Optional[str] = typer.Option(None, "--drop-hard", help="Difficulty stage of every method but random: auto, a fraction, or 0 (default: each method's own)."),
    strata: Optional[int] = typer.Option(None, "--strata", help="Difficulty strata of every method but random (default: each method's own)."),
    full: bool = typer.Option(True, "--full/--no-full", help="Also train on all the data (the reference row)."),
    weighted: bool = typer.Option(False, "--weighted", help="Also train every method but random on its weights gamma (rows <method>+γ)."),
):
    """Evaluate methods x fractions x label noise x seeds; write tables and plots."""
    config = BenchConfig(
        dataset=dataset, out=out, data_root=data_root, methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        fractions=_floats(fractions, "--fractions"), label_noise=_floats(label_noise, "--label-noise"),
        seeds=tuple(int(s) for s in _floats(seeds, "--seeds")), model=model, warmup_epochs=warmup_epochs,
        train_epochs=train_epochs, lr=lr, batch_size=batch_size, posterior_samples=posterior_samples,
        posterior_sigma=posterior_sigma, dynamic=tuple(k.strip() for k in dynamic.split(",") if k.strip()),
        drop_hard=drop_hard, strata=strata, full=full, weighted=weighted,
    )
    run_bench(config, resolve_device(device))
    console.print(f"results: {out / 'results.md'}, {out / 'results.png'}")
