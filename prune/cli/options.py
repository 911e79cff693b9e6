"""Options several commands share, defined once."""

from __future__ import annotations

import typer

from prune.data import DATASETS
from prune.models import MODELS

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
