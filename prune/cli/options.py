"""Options several commands share, each defined once with the help panel it is listed under.

``--help`` groups options by stage: Data, Model & warm-up (Model & training for ``train`` and
``bench``), Posterior, Method, Budget, Output; ``--seed`` and ``--device`` stay in the general
Options panel, and the knobs that only serve the papers' ablations in ``ADVANCED``. On/off options
are ``flag``s, listed as ``--x/--no-x``. Fixed choices are ``choice`` enums, so ``--help`` lists
them and the parser refuses any other value with a usage error (exit 2). Commands turn a chosen
member back into its name with ``value`` before calling the library, which checks the same names
itself for Python callers. The defaults of the model, warm-up and posterior options are the
configs' (``WarmupConfig``, ``TrainConfig``, ``PosteriorConfig``); ``given`` passes on only the
options a user gave, so the configs fill in the rest and ``prune select --features`` can refuse
those that would compute features.
"""

from __future__ import annotations

from enum import Enum

import typer

from prune.config import DataSpec, WarmupConfig
from prune.data import DATASETS
from prune.features import DTYPES, HESSIANS, POSTERIOR_KINDS, POSTERIOR_LAYERS, PosteriorConfig
from prune.augment import AUGMENTS
from prune.models import MODELS
from prune.models.torchvision_models import PREFIX as TORCHVISION, torchvision_names
from prune.selection.difficulty import SCORES, STRATA_BUDGETS
from prune.training import DEVICES, SCHEDULES, SEED_MAX, TrainConfig

DATA = "Data"
WARMUP = "Model & warm-up"
TRAINING = "Model & training"
POSTERIOR = "Posterior"
METHOD = "Method"
DIFFICULTY = "Difficulty stage"
BUDGET = "Budget"
OUTPUT = "Output"
ADVANCED = "Advanced (papers' ablations)"


def choice(name: str, values) -> type[Enum]:
    """A str-valued enum of ``values``: typer lists them in ``--help`` and refuses any other value."""
    return Enum(name, [(v, v) for v in values], type=str)


def value(chosen: Enum | None) -> str | None:
    """The name a ``choice`` member stands for (``None`` stays ``None``)."""
    return None if chosen is None else chosen.value


def flag(name: str, help: str, default: bool = False, **kwargs):
    """An on/off option ``--name/--no-name``, listed without a ``<bool>`` type placeholder."""
    return typer.Option(default, f"--{name}/--no-{name}", metavar="", help=help, **kwargs)


def given(ctx: typer.Context, names) -> dict:
    """The options ``names`` (parameter names) as the user gave them, on the command line or through the
    environment (a choice as its name), and None for those left at their defaults: the configs hold those."""
    out = {}
    for name in names:
        source = ctx.get_parameter_source(name)  # typer may vendor click: compare by name
        chosen = ctx.params[name]
        left = source is None or source.name in ("DEFAULT", "DEFAULT_MAP")
        out[name] = None if left else chosen.value if isinstance(chosen, Enum) else chosen
    return out


Augment = choice("Augment", AUGMENTS)
DeviceName = choice("DeviceName", DEVICES)
PosteriorLayers = choice("PosteriorLayers", POSTERIOR_LAYERS)
PosteriorKind = choice("PosteriorKind", POSTERIOR_KINDS)
HessianKind = choice("HessianKind", HESSIANS)
StorageType = choice("StorageType", DTYPES)
Schedule = choice("Schedule", SCHEDULES)
DifficultyScore = choice("DifficultyScore", SCORES)
StrataBudget = choice("StrataBudget", STRATA_BUDGETS)

# -- data ----------------------------------------------------------------------------------
Dataset = typer.Option("digits", "--dataset", help=f"Data source: {', '.join(DATASETS)}.", rich_help_panel=DATA)
DataRoot = typer.Option(None, "--data-root", help="Folder holding the dataset files (default: $PRUNE_DATA_ROOT).",
                        rich_help_panel=DATA)
Download = flag("download", "Download the dataset into --data-root if missing.", rich_help_panel=DATA)
# hf: sources (prune.data.hf): which split and columns to read
Split = typer.Option(None, "--split", help="hf: DatasetDict split to train on (default: train).", rich_help_panel=DATA)
ImageColumn = typer.Option(None, "--image-column", help="hf: column of images (default: image).", rich_help_panel=DATA)
LabelColumn = typer.Option(None, "--label-column", help="hf: column of integer labels (default: label).",
                           rich_help_panel=DATA)
EvalSplit = typer.Option(None, "--eval-split", help="hf: DatasetDict split held out for test accuracy (default: test, else validation).",
                         rich_help_panel=DATA)
FeatureColumn = typer.Option(None, "--feature-column", help="hf: column of precomputed vectors (instead of images).",
                             rich_help_panel=DATA)
LabelNoise = typer.Option(DataSpec.label_noise, "--label-noise", help="Fraction of training labels to flip to another class.",
                          rich_help_panel=DATA)
NoiseSeed = typer.Option(DataSpec.noise_seed, "--noise-seed", min=0, max=SEED_MAX, help="Seed of the label flips.", rich_help_panel=DATA)
# folder: sources (prune.data.folder)
ImageSize = typer.Option(None, "--image-size", min=1, help="folder: resize images (shorter side to N, centre crop N x N).",
                         rich_help_panel=DATA)
SkipBad = flag("skip-bad", "folder: leave unreadable images out (recorded) instead of stopping.", rich_help_panel=DATA)


# -- model and its training: under "Model & warm-up" (select, features) or "Model & training" --
def _model_name(name: str | None) -> str | None:
    """``--model``: one of ``MODELS`` or ``torchvision:NAME`` with NAME a torchvision classification model."""
    if name is None or name in MODELS or (name.startswith(TORCHVISION) and name[len(TORCHVISION):] in torchvision_names()):
        return name
    raise typer.BadParameter(f"{name!r} is not one of {', '.join(map(repr, MODELS))}, nor torchvision:NAME with NAME "
                             "a torchvision classification model (e.g. torchvision:resnet18)")


def model_option(panel: str = WARMUP):
    return typer.Option(None, "--model", callback=_model_name, rich_help_panel=panel,
                        help=f"{', '.join(MODELS)} or torchvision:NAME (e.g. torchvision:resnet18). "
                             "Default: mlp for small inputs, lenet for images, resnet20 for CIFAR.")


def checkpoint_option(panel: str = WARMUP):
    return typer.Option(None, "--checkpoint", rich_help_panel=panel,
                        help="Start from these weights (a state_dict saved with torch.save; read with weights_only=True).")


def amp_option(panel: str = WARMUP):
    return flag("amp", "CUDA: mixed precision (bfloat16 autocast for the forward passes; the head and loss in float32).",
                default=TrainConfig.amp, rich_help_panel=panel)


def augment_option(panel: str = WARMUP):
    return typer.Option(TrainConfig.augment, "--augment", rich_help_panel=panel,
                        help="Augment training batches: none, or standard (random crop with padding, horizontal flip). "
                             "Features are never augmented.")


def lr_option(panel: str = WARMUP):
    return typer.Option(TrainConfig.lr, "--lr", help="SGD learning rate (momentum 0.9, weight decay 5e-4, cosine schedule).",
                        rich_help_panel=panel)


def batch_size_option(panel: str = WARMUP):
    return typer.Option(TrainConfig.batch_size, "--batch-size", help="SGD batch size.", rich_help_panel=panel)


def warmup_epochs_option(panel: str = WARMUP):
    return typer.Option(WarmupConfig.epochs, "--warmup-epochs", help="Epochs of warm-up on the full training split.",
                        rich_help_panel=panel)


def warmup_schedule_option(panel: str = WARMUP):
    return typer.Option(TrainConfig.schedule, "--warmup-schedule", help="Learning rate of the warm-up: cosine (anneal to 0) or constant (DeepCore, LCMat).",
                        rich_help_panel=panel)


# -- the difficulty stage (prune.selection.difficulty) ----------------------------------------
DropHard = typer.Option(None, "--drop-hard", help="Drop the hard examples before selecting: auto (those whose label the warm model's posterior mean believes less than chance, p < 1/C), a fraction of each class (hardest by --difficulty-score), or 0. Default: auto, 0 for random.", rich_help_panel=DIFFICULTY)
Strata = typer.Option(None, "--strata", help="Split each class into N difficulty strata, each with a budget of its own; the method runs in each. auto: 5 where a class's budget is under 7 % of it, else 1. Default: auto for the facility-location methods (craig, adacore, lcmat, ensemble, crest), 10 for ccs, else 1 (herding keeps the distribution itself).", rich_help_panel=DIFFICULTY)
StrataBudgets = typer.Option(None, "--strata-budget", help="equal: equal-width strata, the budget split equally (coverage, ccs's default); proportional: quantile strata, each with its share, so the subset keeps the class's difficulty distribution (the facility-location methods' default).", rich_help_panel=DIFFICULTY)
Score = typer.Option(None, "--difficulty-score", help="Score for --strata and a fractional --drop-hard, averaged over the posterior samples (default el2n).", rich_help_panel=DIFFICULTY)


# -- posterior and curvature (prune.features.PosteriorConfig) ------------------------------
Samples = typer.Option(PosteriorConfig.samples, "--posterior-samples", help="M posterior samples (1 = none); herding and ensemble average over them.", rich_help_panel=POSTERIOR)
Sigma = typer.Option(PosteriorConfig.sigma, "--posterior-sigma", help="Std of the Gaussian weight perturbations.",
                     rich_help_panel=POSTERIOR)
Layers = typer.Option(PosteriorConfig.layers, "--posterior-layers", help="The parameters perturbed: BatchNorm (bn), last layer (fc), all.",
                      rich_help_panel=POSTERIOR)
# the papers' ablations
Kind = typer.Option(PosteriorConfig.kind, "--posterior-kind", help="Gaussian noise, noise scaled by the Hessian, or seeds.",
                    rich_help_panel=ADVANCED)
Hessian = typer.Option(PosteriorConfig.hessian, "--hessian", help="Logit Hessian diagonal: closed form, or Hutchinson probes.",
                       rich_help_panel=ADVANCED)
HutchinsonSamples = typer.Option(PosteriorConfig.hutchinson_samples, "--hutchinson-samples", help="Rademacher probes for --hessian hutchinson.",
                                 rich_help_panel=ADVANCED)

# -- output --------------------------------------------------------------------------------
Overwrite = flag("overwrite", "Replace existing outputs (without it, an existing output is refused before any work).",
                 rich_help_panel=OUTPUT)

# -- general -------------------------------------------------------------------------------
def seed_option(help: str = "Seed for warm-up, posterior draws and selection."):
    return typer.Option(0, "--seed", min=0, max=SEED_MAX, help=help)


Seed = seed_option()
Quiet = flag("quiet", "No progress bars or per-epoch lines; results and notes still print.")
Device = typer.Option("auto", "--device", help="auto: CUDA when present, else CPU.")
