"""prune from Python: one function per job, the same code the command line runs.

    import prune

    data = prune.DataSpec("fashion-mnist", data_root="data/fashion-mnist", download=True)
    store = prune.features(data, prune.WarmupConfig(epochs=5), prune.PosteriorConfig(samples=4), out="fm.h5")
    manifest = prune.select(data, prune.MethodConfig("herding"), prune.Budget(fraction=0.05), features="fm.h5")
    result = prune.train(data, prune.TrainConfig(epochs=40), manifest=manifest)

``features`` writes a feature store, ``select`` a manifest (``plan`` is its first half: what it
would do), ``train`` trains a fresh model on a manifest, on all data, or with selection during
training, and ``bench`` runs the evaluation protocol. Each takes the frozen configs of
``prune.config``; user errors raise ``prune.errors.PruneError``.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prune import distributed
from prune.atomic import ensure_writable
from prune.config import DataSpec, PosteriorConfig, WarmupConfig, feature_config, select_configs
from prune.data import LoadedData, data_root_used, flip_labels, load_dataset, source_paths
from prune.dynamic import DynamicConfig, run_dynamic
from prune.errors import PruneError
from prune.features import FeatureStore, build_store, store_bytes
from prune.manifest import Manifest, creation_time
from prune.models import default_model
from prune.selection import Budget, Candidates, MethodConfig, SelectionPlan, check_request, plan_selection
from prune.selection import select as select_candidates
from prune.bench import BenchConfig, run_bench
from prune.training import ModelSpec, TrainConfig, check_amp, check_seed, console, fit_and_test, resolve_device


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


def check_outputs(out, store=None, *, dataset=None, data_root=None, features=None, checkpoint=None,
                  overwrite: bool = False) -> None:
    """Refuse, before any work, a manifest (``out``) or store path that cannot be written, that
    would destroy an input, or that exists unless ``overwrite`` (``prune.atomic.ensure_writable``)."""
    inputs = [features, checkpoint, *source_paths(dataset, data_root)]
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


def features(data: DataSpec, warmup: WarmupConfig = WarmupConfig(), posterior: PosteriorConfig = PosteriorConfig(), *,
             out: str | Path, seed: int = 0, device: str | torch.device = "auto", dtype: str = "float32",
             resume: bool = False) -> FeatureStore | None:
    """Warm up a model on ``data`` and write its per-sample features to the HDF5 store ``out``; the store, opened.

    The store is written under a temporary name and renamed when complete; ``resume`` continues an
    interrupted run of the same ``out`` and settings. Under torchrun every rank calls this and
    shares the work; rank 0 writes the store and gets it, opened; the other ranks get None.
    """
    check_seed(seed)
    torch_device = _device(device, warmup.amp)
    loaded = data.load()
    labels, noise, flipped = data.training_labels(loaded)
    config = feature_config(loaded, warmup, posterior, dtype)
    build_store(loaded, labels, out, config, seed=seed, device=torch_device, label_noise=noise, flipped=flipped,
                resume=resume)
    return FeatureStore.open(out) if distributed.current().main else None


def _device(device: str | torch.device, amp: bool = False) -> torch.device:
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    check_amp(amp, torch_device)
    return torch_device


def plan(data: DataSpec | None = None, method: MethodConfig = MethodConfig(), budget: Budget = Budget(), *,
         features: str | Path | None = None, warmup: WarmupConfig = WarmupConfig(),
         posterior: PosteriorConfig = PosteriorConfig(), seed: int = 0, device: str | torch.device = "auto") -> SelectionPlan:
    """What ``select`` with the same arguments would do (budgets, pools, memory): the first half of ``select``,
    with no model run and nothing written (nor downloaded)."""
    with _candidates(data, method, budget, features, (warmup, posterior, seed, device), plan_only=True) as found:
        candidates, feature_bytes, torch_device = found
        return plan_selection(candidates, method, budget, seed=seed, device=torch_device, feature_bytes=feature_bytes)


def select(data: DataSpec | None = None, method: MethodConfig = MethodConfig(), budget: Budget = Budget(), *,
           features: str | Path | None = None, warmup: WarmupConfig = WarmupConfig(),
           posterior: PosteriorConfig = PosteriorConfig(), seed: int = 0,
           device: str | torch.device = "auto") -> Manifest | None:
    """Select a coreset of ``data``'s training split with ``method``; its manifest (save it with ``.save``).

    ``features`` selects from an existing store (``data``, if given, is checked against it: size,
    labels and their order); without it, a model is warmed up (``warmup``) and its features
    (``posterior``) computed into a temporary store first, unless the method and its difficulty
    stage need none (``random``). ``prune select`` runs this. Under torchrun, with ``features``,
    every rank calls this and shares the greedy runs; rank 0 gets the manifest, the others None.
    """
    creation_time()  # a malformed SOURCE_DATE_EPOCH fails now, not after the work
    with _candidates(data, method, budget, features, (warmup, posterior, seed, device)) as found:
        candidates, _, torch_device = found
        return select_candidates(candidates, method, budget, seed=seed, device=torch_device)


@contextlib.contextmanager
def _candidates(data: DataSpec | None, method: MethodConfig, budget: Budget, features, compute: tuple,
                plan_only: bool = False):
    """(candidates, bytes of features still to compute, device): from the store ``features``, or from ``data``
    with features computed into a temporary store (deleted on exit) where the method needs them."""
    warmup, posterior, seed, device = compute
    check_seed(seed)
    torch_device = _device(device, warmup.amp)
    if features is not None:
        with FeatureStore.open(features) as store:
            if data is not None:
                store.check_dataset(data.load(download=data.download and not plan_only))
            candidates = Candidates.from_store(store)
            root = data_root_used(candidates.dataset["source"], data.data_root if data else None)
            if root:
                candidates.dataset["root"] = root_hint(root)
            yield candidates, 0, torch_device
        return
    data = data or DataSpec()
    loaded = _load_for(data, plan_only)
    labels, noise, flipped = data.training_labels(loaded)
    needs_features = method.method.needs_features or method.stage().active
    check_request(labels, loaded.num_classes, method, budget, posterior.samples if needs_features else None)
    record = dataset_record(loaded, data.data_root)
    if not needs_features or plan_only:
        noise_record = noise and {**noise, "flipped": flipped.tolist(), "noisy_labels": labels[flipped].tolist()}
        config = feature_config(loaded, warmup, posterior) if needs_features else None
        yield Candidates(labels, record, noise_record), config and store_bytes(loaded, config), torch_device
        return
    with tempfile.TemporaryDirectory() as folder:  # the store is read lazily during selection
        path = Path(folder) / "features.h5"
        build_store(loaded, labels, path, feature_config(loaded, warmup, posterior), seed=seed, device=torch_device,
                    label_noise=noise, flipped=flipped)
        with FeatureStore.open(path) as store:
            yield Candidates.from_store(store, root=record.get("root")), 0, torch_device


def _load_for(data: DataSpec, plan_only: bool) -> LoadedData:
    """``data`` loaded; a dry run downloads nothing."""
    try:
        return data.load(download=data.download and not plan_only)
    except PruneError as err:
        if plan_only and data.download:
            raise PruneError(f"{err} (a dry run downloads nothing: run without --dry-run to download)") from None
        raise


def select_coreset(dataset: str | None = None, method: str = "herding", **keywords) -> Manifest | SelectionPlan | None:
    """``select`` with the command line's option names as keywords (``fraction=0.1``, ``warmup_epochs=1``, ...);
    ``out`` also saves the manifest there (an existing file is refused unless ``overwrite=True``), ``store`` keeps
    the features computed, and ``dry_run=True`` returns the plan (``plan``) instead."""
    out, overwrite = keywords.pop("out", None), keywords.pop("overwrite", False)
    store, dry_run = keywords.pop("store", None), keywords.pop("dry_run", False)
    configs = select_configs(dataset=dataset, method=method, **keywords)
    if dry_run:
        return plan(**configs)
    check_outputs(out, store, dataset=dataset, data_root=keywords.get("data_root"), features=configs["features"],
                  checkpoint=keywords.get("checkpoint"), overwrite=overwrite)
    if store is not None and configs["features"] is None:  # the features kept: computed once into ``store``
        features(configs["data"], configs["warmup"], configs["posterior"], out=store, seed=configs.get("seed", 0),
                 device=configs.get("device", "auto")).close()
        configs["features"] = store
    manifest = select(**configs)
    if out is not None and manifest is not None:
        manifest.save(out, overwrite=True)  # checked above, before the work
    return manifest


@dataclass
class TrainResult:
    """What ``train`` returns: test accuracy and loss (None without a test split), the per-epoch history on the
    examples trained on, how many distinct examples were trained on, seconds, the trained model and its name;
    a dynamic run's subset log (``prune.dynamic.subset_log``) and back-propagated examples."""

    test_accuracy: float | None
    test_loss: float | None
    history: list[dict]
    train_examples: int
    wall_seconds: float
    model: torch.nn.Module = field(repr=False)
    model_name: str = ""
    log: dict | None = field(default=None, repr=False)
    backprops: int | None = None


def train(data: DataSpec | None = None, config: TrainConfig = TrainConfig(epochs=20), *,
          manifest: Manifest | str | Path | None = None, dynamic: DynamicConfig | None = None, model: str | None = None,
          checkpoint: str | Path | None = None, seed: int = 0, device: str | torch.device = "auto") -> TrainResult:
    """Train a fresh model and test it: on a manifest's subset (``manifest``, a ``Manifest`` or its path; ``data``
    None: the manifest's source, from its recorded folder), on all of ``data``, or selecting mini-batch coresets
    during training (``dynamic``). ``config.weighted`` weights each example's loss by the manifest's gamma.
    ``prune train`` runs this."""
    check_seed(seed)
    torch_device = _device(device, config.amp)
    if dynamic is not None:
        if manifest is not None or checkpoint is not None:
            raise PruneError("dynamic selection trains a fresh model on all data: drop the manifest and checkpoint")
        return _train_dynamic(data or DataSpec(), dynamic, model, seed, torch_device)
    if manifest is None:
        spec = data or DataSpec()
        loaded = spec.load()
        labels, _, _ = spec.training_labels(loaded)
        indices, weights = torch.arange(len(labels)), None
    else:
        chosen = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
        if data is not None and data.label_noise:
            raise PruneError("a manifest records the labels it was made with; drop the label noise")
        loaded = load_recorded(chosen.dataset, data.source if data else None, data.data_root if data else None,
                               data.download if data else False, **(data.options() if data else {}))
        counts = torch.bincount(loaded.train.y, minlength=loaded.num_classes).tolist()
        warning = chosen.check_dataset(fingerprint=loaded.fingerprint, num_examples=len(loaded.train),
                                       class_counts=counts, files_fingerprint=loaded.record().get("files_fingerprint"))
        if warning:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        labels = torch.from_numpy(chosen.training_labels(loaded.train.y.numpy()))
        indices = torch.from_numpy(chosen.indices)
        weights = torch.from_numpy(chosen.weights) if config.weighted else None
        model = model or (chosen.model or {}).get("features", {}).get("model")
    name = model or default_model(loaded.source, loaded.input_shape)
    run = fit_and_test(loaded, labels, indices, config, ModelSpec(name, checkpoint), seed=seed, device=torch_device,
                       weights=weights)
    return TrainResult(run["test_accuracy"], run["test_loss"], run["history"], run["train_examples"],
                       run["wall_seconds"], run["model"], name)


def _train_dynamic(data: DataSpec, dynamic: DynamicConfig, model: str | None, seed: int,
                   device: torch.device) -> TrainResult:
    """``train`` with selection during training (``prune.dynamic.run_dynamic``)."""
    loaded = data.load()
    labels, _, _ = data.training_labels(loaded)
    name = model or default_model(loaded.source, loaded.input_shape)
    start = time.perf_counter()
    result = run_dynamic(loaded, dynamic, model_name=name, seed=seed, device=device, labels=labels,
                         dataset_record=dataset_record(loaded, data.data_root), description=f"dynamic {dynamic.kind}")
    trained = {i for point in result.log["selections"] for batch in point["batches"] for i in batch}
    return TrainResult(result.test["accuracy"], result.test["loss"], result.history, len(trained),
                       time.perf_counter() - start, result.model, name, result.log, result.backprops)


def bench(config: BenchConfig, device: str | torch.device = "auto", *, reuse: bool = True) -> list[dict]:
    """Run the evaluation protocol (``prune.bench``): every method, fraction, label noise and seed of ``config``,
    one warm-up per seed shared by every row; one row per cell, and the report in ``config.out``.
    ``reuse`` reads the cells an earlier run finished with the same settings instead of computing them."""
    return run_bench(config, _device(device), reuse=reuse)
