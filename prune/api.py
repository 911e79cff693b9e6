"""prune from Python: one function per job, shared with the command line.

``select_coreset`` is what ``prune select`` runs (the CLI adds only the default output name
and the printing); ``load_training_data``, ``feature_config`` and ``dataset_record`` are the
pieces ``prune features`` and ``prune train`` share with it.

    import prune
    manifest = prune.select_coreset("digits", "herding", fraction=0.1, seed=0)
    manifest.save("manifests/digits-herding-0.1.json")
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path

import torch

from prune.atomic import ensure_writable
from prune.data import LoadedData, data_root_used, flip_labels, load_dataset, source_paths
from prune.errors import PruneError
from prune.features import FeatureConfig, FeatureStore, build_store, store_bytes
from prune.manifest import Manifest, creation_time
from prune.models import checkpoint_record, default_model
from prune.selection import (METHODS, Candidates, MethodOptions, SelectionPlan, check_request,
                             default_difficulty, plan_selection, select)
from prune.selection.methods import SAMPLING
from prune.training import TrainConfig, check_amp, check_seed, resolve_device


def source_options(split=None, image_column=None, label_column=None, feature_column=None, image_size=None,
                   skip_bad=False) -> dict:
    """The ``load_dataset`` keywords of an ``hf:`` or ``folder:`` source, leaving out those not given."""
    given = {"split": split, "image_column": image_column, "label_column": label_column,
             "feature_column": feature_column, "image_size": image_size, "skip_bad": skip_bad or None}
    return {key: value for key, value in given.items() if value is not None}


def recorded_options(record: dict) -> dict:
    """The ``load_dataset`` keywords that reload the data of a manifest's ``dataset`` record."""
    if str(record.get("source", "")).startswith("folder:"):
        return source_options(image_size=record.get("image_size"), skip_bad=record.get("skip_bad", False))
    if not str(record.get("source", "")).startswith("hf:"):
        return {}
    columns = record.get("columns") or {}
    return source_options(split=record.get("split"), image_column=columns.get("image"),
                          label_column=columns.get("label"), feature_column=columns.get("feature"))


def load_training_data(dataset: str, data_root: str | None = None, download: bool = False,
                       label_noise: float = 0.0, noise_seed: int = 0, **options):
    """Load data and apply label noise; returns (data, labels used, noise record, flipped).

    ``options`` are ``load_dataset``'s ``hf:`` keywords (``split``, ``image_column``, ...).
    """
    data = load_dataset(dataset, data_root, download, **options)
    if not label_noise:
        return data, data.train.y, None, torch.empty(0, dtype=torch.int64)
    labels, flipped = flip_labels(data.train.y, label_noise, data.num_classes, noise_seed)
    return data, labels, {"fraction": label_noise, "seed": noise_seed}, flipped


def feature_config(data: LoadedData, model, warmup_epochs, lr, batch_size, samples, sigma, layers, kind, hessian,
                   hutchinson_samples, dtype, warmup_schedule: str = "cosine", checkpoint=None,
                   augment: str = "none", amp: bool = False) -> FeatureConfig:
    return FeatureConfig(
        model=model or default_model(data.source, data.input_shape),
        warmup=TrainConfig(epochs=warmup_epochs, batch_size=batch_size, lr=lr, schedule=warmup_schedule,
                           augment=augment, amp=amp),
        posterior_samples=samples, posterior_sigma=sigma, posterior_layers=layers, posterior_kind=kind,
        hessian=hessian, hutchinson_samples=hutchinson_samples, dtype=dtype,
        checkpoint=None if checkpoint is None else checkpoint_record(checkpoint),
    )


def root_hint(root: str) -> str:
    """``root`` as a manifest records it: relative to the working folder when inside it, else absolute."""
    path = Path(root).expanduser().resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def dataset_record(data: LoadedData, data_root: str | None) -> dict:
    """The manifest's ``dataset`` object: ``data.record()`` plus the data folder read (``root``), if any."""
    record = data.record()
    root = data_root_used(data.source, data_root)
    if root:
        record["root"] = root_hint(root)
    return record


def check_outputs(out, store=None, *, dataset=None, data_root=None, features=None, overwrite: bool = False) -> None:
    """Refuse, before any work, a manifest (``out``) or store path that cannot be written, that
    would destroy an input, or that exists unless ``overwrite`` (``prune.atomic.ensure_writable``)."""
    inputs = [features, *source_paths(dataset, data_root)]
    if out is not None:
        ensure_writable(out, inputs=[*inputs, store], overwrite=overwrite)
    if store is not None and features is None:
        ensure_writable(store, inputs=inputs, overwrite=overwrite)


def load_recorded(record: dict, dataset: str | None, data_root: str | None, download: bool = False,
                  what: str = "manifest", **options) -> LoadedData:
    """The data a manifest's (or subset log's) ``dataset`` record names, from ``data_root`` if given, else
    from the recorded ``root`` if that folder exists here, else from ``$PRUNE_DATA_ROOT``; when that fails,
    the error says where the record's files were."""
    recorded = record.get("root")
    root = data_root or (recorded if recorded and Path(recorded).expanduser().is_dir() else None)
    try:
        return load_dataset(dataset or record["source"], root, download, **options)
    except PruneError as err:
        if root is None and recorded:
            raise PruneError(f"{err} (the {what} was made from the files in {recorded}, not found here)") from None
        raise


def method_options(options: MethodOptions | dict | None = None, **overrides) -> MethodOptions:
    """``MethodOptions`` from an instance or a dict, with keyword overrides; unknown names are errors."""
    known = {f.name for f in dataclasses.fields(MethodOptions)}
    if isinstance(options, MethodOptions):
        base = dataclasses.asdict(options)
    elif options is None:
        base = {}
    elif isinstance(options, dict):
        base = dict(options)
    else:
        raise PruneError(f"options must be a MethodOptions or a dict, got {type(options).__name__}")
    base.update(overrides)
    unknown = sorted(set(base) - known)
    if unknown:
        raise PruneError(f"unknown method option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return MethodOptions(**base)


def select_coreset(
    dataset: str | None = None, method: str = "herding", *, fraction: float | None = None, count: int | None = None,
    balance: str = "proportional", seed: int = 0, out: str | Path | None = None,
    features: str | Path | None = None, store: str | Path | None = None,
    data_root: str | None = None, download: bool = False,
    split: str | None = None, image_column: str | None = None, label_column: str | None = None,
    feature_column: str | None = None, image_size: int | None = None, skip_bad: bool = False,
    model: str | None = None, checkpoint: str | Path | None = None, warmup_epochs: int = 5, lr: float = 0.05,
    batch_size: int = 128, warmup_schedule: str = "cosine", augment: str = "none", amp: bool = False,
    posterior_samples: int = 4, posterior_sigma: float = 0.01, posterior_layers: str = "bn",
    posterior_kind: str = "gaussian", hessian: str = "exact", hutchinson_samples: int = 100,
    label_noise: float = 0.0, noise_seed: int = 0, device: str | torch.device = "auto",
    drop_hard: str | float | None = None, strata: int | str | None = None, strata_budget: str | None = None,
    difficulty_score: str | None = None,
    options: MethodOptions | dict | None = None, dry_run: bool = False, overwrite: bool = False, **method_overrides,
) -> Manifest | SelectionPlan | None:
    """Select a coreset of ``dataset``'s training split with ``method``; return its manifest.

    The same as ``prune select`` with the same arguments (``--fraction`` is ``fraction``,
    ``--image-column`` is ``image_column``, ...): load the data (``dataset`` as for
    ``prune.data.load_dataset``; ``split`` and the ``*_column`` arguments for ``hf:PATH``,
    ``image_size`` and ``skip_bad`` for ``folder:PATH``), warm up a model (from ``checkpoint``'s
    weights if given; ``augment`` for its training batches; ``amp``: bfloat16 autocast on CUDA) and compute features in a temporary store (kept at ``store`` if
    given; ``features`` selects from an existing store instead, running no model;
    ``random`` needs no features), then select. Without ``fraction`` and ``count``,
    ``fraction=0.1``. Method knobs (``rho``, ``top_k``, ``max_pool``, ... of
    ``prune.selection.MethodOptions``) come as ``options`` and/or keywords. ``out`` also
    saves the manifest there; an existing ``out`` or ``store`` is refused unless ``overwrite``.
    ``drop_hard``, ``strata``, ``strata_budget`` and ``difficulty_score`` set the difficulty stage
    (``prune.selection.difficulty``; None keeps the method's default, see
    ``prune.selection.default_difficulty``). User errors raise ``prune.errors.PruneError``.

    ``dataset`` defaults to ``digits``; given together with ``features`` it is loaded and
    checked against the store (size, labels and their order must match). ``dry_run=True``
    returns the ``prune.selection.SelectionPlan`` instead (budgets, pools, memory), having
    run no model and written nothing (nor downloaded anything). Under torchrun, with ``features``,
    every rank calls this and shares the greedy runs; rank 0 returns (and saves) the manifest, the
    other ranks get None.
    """
    if fraction is None and count is None:
        fraction = 0.1
    check_seed(seed)
    check_seed(noise_seed, "--noise-seed")
    creation_time()  # a malformed SOURCE_DATE_EPOCH fails now, not after the work
    if method not in METHODS:
        raise PruneError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    opts = method_options(options, **method_overrides)
    stage = default_difficulty(method, drop_hard, strata, difficulty_score, strata_budget)
    needs_features = method not in SAMPLING or stage.active
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    check_amp(amp, torch_device)
    if not dry_run:  # before the work, not after it
        check_outputs(out, store, dataset=dataset, data_root=data_root, features=features, overwrite=overwrite)
    scratch = contextlib.ExitStack()  # a temporary store's folder, when prune computes the features
    hf = source_options(split, image_column, label_column, feature_column, image_size, skip_bad)
    feature_bytes = 0
    if features is not None:
        opened = FeatureStore.open(features)
        if dataset is not None:
            opened.check_dataset(load_dataset(dataset, data_root, download and not dry_run, **hf))
        candidates = Candidates.from_store(opened)
        root = data_root_used(candidates.dataset["source"], data_root)
        if root:
            candidates.dataset["root"] = root_hint(root)
    else:
        try:  # a dry run writes nothing, so it downloads nothing either
            data, labels, noise, flipped = load_training_data(dataset or "digits", data_root, download and not dry_run,
                                                              label_noise, noise_seed, **hf)
        except PruneError as err:
            if dry_run and download:
                raise PruneError(f"{err} (a dry run downloads nothing: run without --dry-run to download)") from None
            raise
        record = dataset_record(data, data_root)
        check_request(labels, data.num_classes, method, fraction=fraction, count=count, balance=balance, options=opts,
                      posterior_samples=posterior_samples if needs_features else None)  # before any model
        if not needs_features or dry_run:
            noise_record = noise and {**noise, "flipped": flipped.tolist(), "noisy_labels": labels[flipped].tolist()}
            candidates = Candidates(labels, record, noise_record)
            if needs_features:  # dry run: the size the features would have
                config = feature_config(data, model, warmup_epochs, lr, batch_size, posterior_samples, posterior_sigma,
                                        posterior_layers, posterior_kind, hessian, hutchinson_samples, "float32", warmup_schedule,
                                        checkpoint, augment, amp)
                feature_bytes = store_bytes(data, config)
        else:
            config = feature_config(data, model, warmup_epochs, lr, batch_size, posterior_samples, posterior_sigma,
                                    posterior_layers, posterior_kind, hessian, hutchinson_samples, "float32", warmup_schedule,
                                        checkpoint, augment, amp)
            # the store is read lazily during selection: its temporary folder lives until then
            path = store or Path(scratch.enter_context(tempfile.TemporaryDirectory())) / "features.h5"
            build_store(data, labels, path, config, seed=seed, device=torch_device, label_noise=noise, flipped=flipped)
            candidates = Candidates.from_store(FeatureStore.open(path), root=record.get("root"))
    with scratch:
        if dry_run:
            return plan_selection(candidates, method, fraction=fraction, count=count, balance=balance, seed=seed,
                                  options=opts, difficulty=stage, device=torch_device, feature_bytes=feature_bytes)
        manifest = select(candidates, method, fraction=fraction, count=count, balance=balance, seed=seed,
                          options=opts, difficulty=stage, device=torch_device)
    if out is not None and manifest is not None:  # None: a rank other than 0 under torchrun
        manifest.save(out)
    return manifest
