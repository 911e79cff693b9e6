"""`prune features`: warm up a model and write the per-sample features to an HDF5 store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from prune.api import feature_config, load_training_data, source_options
from prune.cli.options import (BatchSize, DataRoot, Dataset, Device, Download, Dtype, FeatureColumn, Hessian,
                               HutchinsonSamples, ImageColumn, Kind, LabelColumn, LabelNoise, Layers, LearningRate,
                               Model, NoiseSeed, Samples, Seed, Sigma, Split, WarmupEpochs)
from prune.features import build_store, partial_path
from prune.training import console, resolve_device


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
