"""The configuration objects of prune's Python API: frozen, checked once, at construction.

Each option's default and each check live here (or in the stage's own config, re-exported here):
``DataSpec`` (what to load), ``WarmupConfig`` (the model and its warm-up), ``PosteriorConfig``
(posterior sampling and curvature; ``prune.features.PosteriorConfig``), ``prune.selection.MethodConfig`` (a method and its knobs),
``prune.selection.DifficultyConfig`` (the difficulty stage), ``prune.selection.Budget`` (how many
to keep), ``prune.training.TrainConfig`` (an SGD run) and ``prune.dynamic.DynamicConfig``
(selection during training). The command line builds these from its options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from prune.data import LoadedData, flip_labels, load_dataset
from prune.dynamic import DynamicConfig
from prune.errors import PruneError
from prune.features import FeatureConfig, PosteriorConfig, TrainingLabels
from prune.models import checkpoint_record, default_model
from prune.selection import Budget, DifficultyConfig, MethodConfig, method_class
from prune.training import TrainConfig, check_seed

__all__ = ["Budget", "DataSpec", "DifficultyConfig", "DynamicConfig", "MethodConfig", "PosteriorConfig",
           "TrainConfig", "WarmupConfig"]


#: the messages name the options' flags; a Python caller reads the parameters' names (``prune.errors.PruneError``)
DATA_PARAMETERS = {"--dataset": "source"}


@dataclass(frozen=True)
class DataSpec:
    """A data source (``prune.data.load_dataset``) and the labels trained on.

    ``split``, ``image_column``, ``label_column``, ``feature_column`` and ``eval_split`` apply to
    ``hf:PATH``; ``image_size`` and ``skip_bad`` to ``folder:PATH``. ``label_noise`` flips that
    fraction of the training labels to another class (seeded by ``noise_seed``). ``source`` None:
    the source a manifest or subset log records (``prune.train`` with one).
    """

    source: str | None = "digits"
    data_root: str | None = None
    download: bool = False
    split: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    feature_column: str | None = None
    eval_split: str | None = None
    image_size: int | None = None
    skip_bad: bool = False
    label_noise: float = 0.0
    noise_seed: int = 0

    def __post_init__(self):
        if self.source is not None and (not isinstance(self.source, str) or not self.source.strip()):
            examples = "e.g. digits, fashion-mnist, folder:PATH"
            raise PruneError(f"--dataset needs a source name, got {self.source!r}; {examples}",
                             python=f"source must name a data source, got {self.source!r}; {examples}")
        noise = self.label_noise
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 1:
            raise PruneError(f"--label-noise fraction must be in [0, 1), got {noise!r}", parameters=True)
        check_seed(self.noise_seed, "--noise-seed")
        if self.noise_seed and not self.label_noise:
            raise PruneError("--noise-seed seeds the label flips of --label-noise, which is 0 here: drop it",
                             parameters=True)

    def options(self) -> dict:
        """The ``load_dataset`` keywords given (hf: split and columns, folder: size and skip_bad)."""
        given = {"split": self.split, "image_column": self.image_column, "label_column": self.label_column,
                 "feature_column": self.feature_column, "eval_split": self.eval_split, "image_size": self.image_size,
                 "skip_bad": self.skip_bad or None}
        return {key: value for key, value in given.items() if value is not None}

    def load(self, download: bool | None = None) -> LoadedData:
        """The data (``download`` None: as the spec says)."""
        if self.source is None:
            raise PruneError("no data source given: name one (--dataset), or give a manifest that records it",
                             parameters=DATA_PARAMETERS)
        return load_dataset(self.source, self.data_root, self.download if download is None else download,
                            **self.options())

    def training_labels(self, data: LoadedData) -> TrainingLabels:
        """The labels trained on (``label_noise`` applied), the noise record (None without) and the flipped rows."""
        if not self.label_noise:
            return TrainingLabels(data.train.y, None, torch.empty(0, dtype=torch.int64))
        labels, flipped = flip_labels(data.train.y, self.label_noise, data.num_classes, self.noise_seed)
        return TrainingLabels(labels, {"fraction": self.label_noise, "seed": self.noise_seed}, flipped)


@dataclass(frozen=True)
class WarmupConfig:
    """The model features are computed with and its warm-up: SGD on the full training split.

    ``model`` None: prune's default for the data (``prune.models.default_model``); ``checkpoint``:
    start from these weights. ``schedule`` "constant" keeps the learning rate (DeepCore, LCMat).
    The SGD settings but ``epochs`` default to ``TrainConfig``'s and are checked there.
    """

    model: str | None = None
    epochs: int = 5
    lr: float = TrainConfig.lr
    batch_size: int = TrainConfig.batch_size
    schedule: str = TrainConfig.schedule
    augment: str = TrainConfig.augment
    amp: bool = TrainConfig.amp
    checkpoint: str | Path | None = None

    def __post_init__(self):
        self.train_config()  # checks epochs, lr, batch size, schedule and augment once, here

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, schedule=self.schedule,
                           augment=self.augment, amp=self.amp)


def feature_config(data: LoadedData, warmup: WarmupConfig, posterior: PosteriorConfig,
                   dtype: str = "float32") -> FeatureConfig:
    """What determines a store's content besides the data and the seed (``prune.features.FeatureConfig``):
    ``warmup``'s model resolved for ``data`` and its checkpoint recorded."""
    return FeatureConfig(model=warmup.model or default_model(data.source, data.input_shape),
                         warmup=warmup.train_config(), posterior=posterior, dtype=dtype,
                         checkpoint=None if warmup.checkpoint is None else checkpoint_record(warmup.checkpoint))


# -- the command line's option names (prune select, prune.select_coreset) -> the configs ---------------------
DATA = ("data_root", "download", "split", "image_column", "label_column", "feature_column", "image_size",
        "skip_bad", "label_noise", "noise_seed")
WARMUP = {"model": "model", "warmup_epochs": "epochs", "lr": "lr", "batch_size": "batch_size",
          "warmup_schedule": "schedule", "augment": "augment", "amp": "amp", "checkpoint": "checkpoint"}
POSTERIOR = {"posterior_samples": "samples", "posterior_sigma": "sigma", "posterior_layers": "layers",
             "posterior_kind": "kind", "hessian": "hessian", "hutchinson_samples": "hutchinson_samples"}
STAGE = {"drop_hard": "drop_hard", "strata": "strata", "strata_budget": "strata_budget", "difficulty_score": "score"}
BUDGET = ("fraction", "count", "balance")
RUN = ("features", "seed", "device")


def _flags(keys) -> str:
    return ", ".join(f"--{key.replace('_', '-')}" for key in keys)


def refuse_with_store(given: dict, dataset: str | None) -> None:
    """With a store (``features``), refuse the options ``given`` (not None) that would compute features (the
    store fixes them) and, without ``dataset``, those that say how to load data (none is loaded)."""
    noisy = [key for key in ("label_noise", "noise_seed") if given.get(key)]  # 0: no flips
    if noisy:
        raise PruneError(f"{_flags(noisy)} {'apply' if len(noisy) > 1 else 'applies'} to the features prune computes; "
                         f"a store records the labels it was made with: drop {_flags(noisy)}, or give "
                         f"{'them' if len(noisy) > 1 else 'it'} to `prune features`")
    computing = [key for key in (*WARMUP, *POSTERIOR) if given.get(key) is not None]
    if computing:
        raise PruneError(f"{_flags(computing)} {'set' if len(computing) > 1 else 'sets'} how features are computed, but "
                         "--features gives them: the store fixes its model, warm-up and posterior samples; drop "
                         f"{_flags(computing)}")
    loading = [key for key in DATA if given.get(key) is not None]
    if dataset is None and loading:
        raise PruneError(f"{_flags(loading)} {'say' if len(loading) > 1 else 'says'} how to load --dataset, which is not "
                         f"given: --features selects from the store's data; drop {_flags(loading)}, or give --dataset "
                         "to check the store against it")


def select_configs(dataset: str | None = None, method: str = "herding", **options) -> dict:
    """The keyword arguments of ``prune.api.select``/``plan`` for ``prune select``'s options (None: the default)."""
    given = {key: value for key, value in options.items() if value is not None}
    known = {*DATA, *WARMUP, *POSTERIOR, *STAGE, *BUDGET, *RUN, *MethodConfig.__dataclass_fields__}
    unknown = sorted(set(given) - known)
    if unknown:
        raise PruneError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    features = given.get("features")
    if features is not None:
        refuse_with_store(given, dataset)
    data = None
    if dataset is not None or features is None:
        data = DataSpec("digits" if dataset is None else dataset, **{key: given[key] for key in DATA if key in given})
    stage = {name: given[key] for key, name in STAGE.items() if key in given}
    knobs = {key: given[key] for key in MethodConfig.__dataclass_fields__ if key in given and key != "name"}
    return {"data": data,
            "method": MethodConfig(method, **knobs, difficulty=method_class(method).difficulty(**stage) if stage else None),
            "budget": Budget(**{key: given[key] for key in BUDGET if key in given}),
            "features": features,
            "warmup": WarmupConfig(**{name: given[key] for key, name in WARMUP.items() if key in given}),
            "posterior": PosteriorConfig(**{name: given[key] for key, name in POSTERIOR.items() if key in given}),
            **{key: given[key] for key in ("seed", "device") if key in given}}
