"""`prune features`: warm up a model and write the per-sample features to an HDF5 store."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer

from prune import api, distributed
from prune.config import DATA as DATA_OPTIONS, POSTERIOR as POSTERIOR_OPTIONS, WARMUP as WARMUP_OPTIONS, select_configs
from prune.atomic import ensure_writable
from prune.cli.options import (OUTPUT, DataRoot, Dataset, Device, DeviceName, Download, FeatureColumn, Hessian,
                               HessianKind, HutchinsonSamples, ImageColumn, Kind, LabelColumn, LabelNoise, Layers,
                               NoiseSeed, Overwrite, PosteriorKind, PosteriorLayers, Quiet, Samples, Sigma, Split,
                               Schedule, StorageType, Augment, ImageSize, SkipBad, amp_option, augment_option, batch_size_option,
                               checkpoint_option, flag, given, lr_option, model_option, seed_option, value,
                               warmup_epochs_option, warmup_schedule_option)
from prune.data import source_paths
from prune.features import FeatureConfig, partial_path
from prune.training import console, resolve_device
from prune.training import quiet as no_progress


def _identity(path: Path) -> tuple[int, int] | None:
    """What tells a file at ``path`` from the one a rename puts there (None: no file)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


def features_command(
    ctx: typer.Context,
    # data
    dataset: str = Dataset, data_root: Optional[str] = DataRoot, download: bool = Download,
    split: Optional[str] = Split, image_column: Optional[str] = ImageColumn, label_column: Optional[str] = LabelColumn,
    feature_column: Optional[str] = FeatureColumn, label_noise: float = LabelNoise, noise_seed: int = NoiseSeed,
    image_size: Optional[int] = ImageSize, skip_bad: bool = SkipBad,
    # model, warm-up and posterior
    model: Optional[str] = model_option(), checkpoint: Optional[Path] = checkpoint_option(),
    warmup_epochs: int = warmup_epochs_option(), lr: float = lr_option(),
    batch_size: int = batch_size_option(), warmup_schedule: Schedule = warmup_schedule_option(),
    augment: Augment = augment_option(), amp: bool = amp_option(),
    posterior_samples: int = Samples, posterior_sigma: float = Sigma, posterior_layers: PosteriorLayers = Layers,
    # output
    out: Path = typer.Option(..., "--out", help="HDF5 file to write (written to a temporary name, then renamed).", rich_help_panel=OUTPUT),
    dtype: StorageType = typer.Option(FeatureConfig.dtype, "--dtype", help="Storage type of the features.", rich_help_panel=OUTPUT),
    resume: bool = flag("resume", "Continue the interrupted run of the same --out and settings from its last complete block (refused when there is none).", rich_help_panel=OUTPUT),
    overwrite: bool = Overwrite,
    seed: int = seed_option("Seed for the warm-up (initialisation, batch order) and the posterior draws."),
    device: DeviceName = Device, quiet: bool = Quiet,
    # the papers' ablations (the "Advanced" panel, listed last)
    posterior_kind: PosteriorKind = Kind, hessian: HessianKind = Hessian, hutchinson_samples: int = HutchinsonSamples,
):
    """Warm up a model and store per-sample gradients, Hessian diagonals and embeddings."""
    dtype, device = value(dtype), value(device)
    world = distributed.start()  # under torchrun: join the other ranks (build_store shares the work), pick the GPU
    torch_device = resolve_device(device)
    ensure_writable(out, inputs=[*source_paths(dataset, data_root), checkpoint], overwrite=overwrite)
    # the options given (the configs hold the defaults)
    configs = select_configs(dataset, **given(ctx, (*DATA_OPTIONS, *WARMUP_OPTIONS, *POSTERIOR_OPTIONS)))
    start, before = time.perf_counter(), _identity(out)
    run = lambda: api.features(configs["data"], configs["warmup"], configs["posterior"], out=out, seed=seed,  # noqa: E731
                               device=torch_device, dtype=dtype, resume=resume)
    if not world.main:
        with no_progress():  # rank 0 shows the progress and writes the store
            run()
        distributed.stop()
        return
    try:
        run().close()
    except KeyboardInterrupt:
        if partial_path(out).exists():
            console.print(f"interrupted: the work done is kept in {partial_path(out)}; run the same command with "
                          "--resume to continue it", highlight=False)
            raise typer.Exit(130) from None
        if _identity(out) in (None, before):
            raise typer.Exit(130) from None
        # Ctrl-C came while the new store was committed (its work folder is removed after that): it is complete
    distributed.stop()
    console.print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
