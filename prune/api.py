"""prune from Python: one function per job, the same code the command line runs.

    import prune

    data = prune.DataSpec("fashion-mnist", data_root="data/fashion-mnist", download=True)
    store = prune.features(data, prune.WarmupConfig(epochs=5), prune.PosteriorConfig(samples=4), out="fm.h5")
    manifest = prune.select(data, prune.MethodConfig("herding"), prune.Budget(fraction=0.05), features="fm.h5")
    result = prune.train(data, prune.TrainConfig(epochs=40), manifest=manifest)
    tuned = prune.train(data, manifest=manifest, model=prune.ModelSpec("lenet", checkpoint="lenet.pt"))

``features`` writes a feature store, ``select`` a manifest (``plan`` is its first half: what it
would do), ``train`` trains a fresh model on a manifest, on all data, or with selection during
training, and ``bench`` runs the evaluation protocol. Each takes the frozen configs of
``prune.config``; ``train``'s model is a name or a ``prune.ModelSpec`` (a name and a ``checkpoint``
whose weights it starts from: a state_dict, as ``prune train --save-model`` writes). User errors
raise ``prune.errors.PruneError``, whose message names the configs' parameters (``fraction``) where
the command line's says the options (``--fraction``).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from rich.markup import escape

from prune import distributed
from prune.atomic import ensure_writable
from prune.config import DataSpec, PosteriorConfig, WarmupConfig, feature_config, select_configs
from prune.data import LoadedData, data_root_used, load_dataset, source_paths
from prune.dynamic import DynamicConfig, DynamicResult, replay, run_dynamic, subset_log
from prune.errors import PruneError
from prune.features import FeatureStore, TrainingLabels, build_store, store_bytes
from prune.manifest import Manifest, creation_time, dataset_mismatch
from prune.models import checkpoint_record
from prune.selection import (Budget, Candidates, MethodConfig, SelectionPlan, check_request, plan_selection,
                             random_subset)
from prune.selection import select as select_candidates
from prune.bench import BenchConfig, run_bench
from prune.training import (ModelSpec, TrainConfig, TrainingRows, check_amp, check_seed, console, fit_and_test, phase,
                            resolve_device, warm_up)


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


def _load_recorded(record: dict, data: DataSpec | None, what: str = "manifest") -> LoadedData:
    """The data a manifest's (or subset log's) ``dataset`` record names.

    ``data``'s source (None: the recorded one), with the recorded split, columns and image size of an
    ``hf:``/``folder:`` source unless ``data`` gives its own (an image or feature column given replaces
    both recorded ones); read from ``data.data_root`` if given, else from the recorded ``root`` if that
    folder exists here, else from ``$PRUNE_DATA_ROOT``; when that fails, the error says where the
    record's files were.
    """
    data = data or DataSpec(None)
    source, given = data.source or record["source"], data.options()
    options = recorded_options(record) if source.startswith(("hf:", "folder:")) else {}
    if "image_column" in given or "feature_column" in given:
        options.pop("image_column", None), options.pop("feature_column", None)
    recorded = record.get("root")
    root = data.data_root or (recorded if recorded and Path(recorded).expanduser().is_dir() else None)
    try:
        with loading(source):
            return load_dataset(source, root, data.download, **{**options, **given})
    except PruneError as err:
        if root is None and recorded:
            raise PruneError(f"{err.cli_message} (the {what} was made from the files in {recorded}, not found here)",
                             parameters=err.parameters) from None
        raise


def loading(source: str | None):
    """The data's loading as a phase of its own (``prune.training.phase``): a line when it starts and one when it is
    done in a log or a pipe, where loading a large source would otherwise be minutes of silence."""
    return phase(f"loading {escape(source) if source else 'the data'}")


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
    with loading(data.source):
        loaded = data.load()
    config = feature_config(loaded, warmup, posterior, dtype)
    build_store(loaded, data.training_labels(loaded), out, config, seed=seed, device=torch_device, resume=resume)
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
    if features is not None:
        _refuse_with_store(data, warmup, posterior)
    torch_device = _device(device, warmup.amp)
    if features is not None:
        with FeatureStore.open(features) as store:
            if data is not None:
                with loading(data.source):
                    loaded = data.load(download=data.download and not plan_only)
                store.check_dataset(loaded)
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
    check_request(labels, loaded.num_classes, method, budget, *(
        (posterior.samples, max(warmup.epochs, 1)) if needs_features else (None, None)))
    record = dataset_record(loaded, data.data_root)
    if not needs_features or plan_only:
        noise_record = noise and {**noise, "flipped": flipped.tolist(), "noisy_labels": labels[flipped].tolist()}
        config = feature_config(loaded, warmup, posterior) if needs_features else None
        yield Candidates(labels, record, noise_record), config and store_bytes(loaded, config), torch_device
        return
    with tempfile.TemporaryDirectory() as folder:  # the store is read lazily during selection
        path = Path(folder) / "features.h5"
        build_store(loaded, TrainingLabels(labels, noise, flipped), path, feature_config(loaded, warmup, posterior),
                    seed=seed, device=torch_device)
        with FeatureStore.open(path) as store:
            yield Candidates.from_store(store, root=record.get("root")), 0, torch_device


def _refuse_with_store(data: DataSpec | None, warmup: WarmupConfig, posterior: PosteriorConfig) -> None:
    """With a store (``features``), refuse the settings that say how to compute features: the store fixes its
    model, warm-up, posterior samples and labels, so they would go unused (``prune.config.refuse_with_store`` is the
    command line's check, by option)."""
    unused = [name for name, given, default in (("warmup", warmup, WarmupConfig()),
                                                ("posterior", posterior, PosteriorConfig())) if given != default]
    if data is not None and data.label_noise:  # (a noise_seed without it is refused by DataSpec)
        unused.append("data's label_noise")
    if unused:
        raise PruneError(f"{' and '.join(unused)} {'set' if len(unused) > 1 else 'sets'} how features are computed, "
                         "but features gives a store, which fixes its model, warm-up, posterior samples and labels: "
                         f"drop {'them' if len(unused) > 1 else 'it'}, or give {'them' if len(unused) > 1 else 'it'} "
                         "to prune.features")


def _load_for(data: DataSpec, plan_only: bool) -> LoadedData:
    """``data`` loaded; a dry run downloads nothing."""
    try:
        with loading(data.source):
            return data.load(download=data.download and not plan_only)
    except PruneError as err:
        if plan_only and data.download:
            raise PruneError(f"{err.cli_message} (a dry run downloads nothing: run without --dry-run to download)",
                             parameters=err.parameters) from None
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
        data = configs["data"]
        features(data, configs["warmup"], configs["posterior"], out=store, seed=configs.get("seed", 0),
                 device=configs.get("device", "auto")).close()
        # the store now holds what these settings computed; the data only checks it
        configs.update(features=store, warmup=WarmupConfig(), posterior=PosteriorConfig(),
                       data=replace(data, label_noise=0.0, noise_seed=0))
    manifest = select(**configs)
    if out is not None and manifest is not None:
        manifest.save(out, overwrite=True)  # checked above, before the work
    return manifest


@dataclass
class TrainResult:
    """What ``train`` returns: test accuracy and loss (None without a test split), the per-epoch history on the
    examples trained on, how many distinct examples were trained on, seconds, the trained model and its name;
    what it trained on (``subset``: a manifest's method, ``full``, ``random`` or a dynamic run's kind); a dynamic
    run's (or replay's) subset log (``prune.dynamic.subset_log``) and back-propagated examples; the run on the
    random baseline; and ``record``, what ``prune train --metrics`` writes."""

    test_accuracy: float | None
    test_loss: float | None
    history: list[dict]
    train_examples: int
    wall_seconds: float
    model: torch.nn.Module = field(repr=False)
    model_name: str = ""
    log: dict | None = field(default=None, repr=False)
    backprops: int | None = None
    subset: str = ""
    baseline: TrainResult | None = None
    record: dict = field(default_factory=dict, repr=False)

    @property
    def difference(self) -> float | None:
        """Test accuracy minus the baseline's (None without a baseline or a test split)."""
        if self.baseline is None or self.test_accuracy is None:
            return None
        return self.test_accuracy - self.baseline.test_accuracy


def train(data: DataSpec | None = None, config: TrainConfig | DynamicConfig | None = None, *,
          manifest: Manifest | dict | str | Path | None = None, model: str | ModelSpec | None = None,
          baseline: str | None = None, force: bool = False, seed: int = 0,
          device: str | torch.device = "auto") -> TrainResult:
    """Train a fresh model and test it; ``prune train`` runs this. What it trains on:

    - ``manifest`` (a ``Manifest`` or its path): the manifest's subset, with the labels it records.
      ``data`` None (or its ``source`` None): the manifest's source, from the folder it records.
      ``config.weighted`` weights each example's loss by its gamma; ``baseline="random"`` also trains
      on a class-balanced random subset with the manifest's count per class (same seed and schedule);
      ``force`` trains even on data that do not match the manifest.
    - a subset log (``manifest`` its path, or the log itself): its batches, in their order, with its
      model, seed and optimiser (``prune.dynamic.replay``); give neither ``config`` nor ``model``.
    - ``config`` a ``DynamicConfig``: mini-batch coresets selected during training, from all of ``data``.
    - otherwise all of ``data``'s training split; ``config`` defaults to ``TrainConfig(epochs=20)``.

    ``model``: a name or a ``ModelSpec`` (with a checkpoint to start from); default: the manifest's
    warm-up model, else prune's default for the data. Options that would go unused are refused.
    """
    check_seed(seed)
    if baseline not in (None, "random"):
        raise PruneError(f"unknown baseline {baseline!r}; the one baseline is 'random'")
    dynamic = isinstance(config, DynamicConfig)
    log, path = _subset_log(manifest)
    if dynamic and manifest is not None:
        raise PruneError("--dynamic selects during training and --manifest trains on a saved subset; give one of them")
    if baseline is not None and (manifest is None or log is not None or dynamic):
        raise PruneError("--baseline random compares a manifest's subset with a random one: give a manifest of "
                         "`prune select` (dynamic runs compare with `--dynamic random`)")
    if force and manifest is None:
        raise PruneError("force (--force) uses a manifest or subset log on data that do not match it; without one, "
                         "drop it")
    if manifest is not None and data is not None and data.label_noise:
        raise PruneError("a manifest (or subset log) records the labels it was made with; drop --label-noise")
    spec = model if isinstance(model, ModelSpec) else ModelSpec(model)
    if dynamic:
        return _train_dynamic(data or DataSpec(), config, spec, seed, device)
    if log is not None:
        if config is not None or spec != ModelSpec():
            raise PruneError("a subset log's replay takes its model, seed, epochs, lr and batches from the log; "
                             "give no training config or model")
        return _replay(data, log, path, force, device)
    config = config or TrainConfig(epochs=20)
    if config.weighted and manifest is None:
        raise PruneError("weighted training (--weighted) weights each example's loss by its manifest's gamma: give a "
                         "manifest (--manifest), or drop it")
    torch_device = _device(device, config.amp)
    examples = _all_examples(data or DataSpec()) if manifest is None else _manifest_examples(manifest, data, force)
    return _train_static(examples, config, spec, baseline, seed, torch_device)


def _subset_log(manifest) -> tuple[dict | None, str | Path | None]:
    """(the subset log, its path) when ``manifest`` is one (a path or the log itself), else (None, None)."""
    if isinstance(manifest, dict):
        subset_log.validate(manifest, source="the subset log given")
        return manifest, None
    if isinstance(manifest, (str, Path)) and subset_log.is_subset_log(manifest):
        return subset_log.load(manifest), manifest
    return None, None


def _say_held_out(data: LoadedData) -> None:
    """Name the split test accuracy comes from where the source has a choice (hf:), or say there is none."""
    if data.source.startswith("hf:") and data.eval_split is not None:
        console.print(f"test accuracy on split {escape(repr(data.eval_split))} ({len(data.test)} examples)",
                      highlight=False)
    elif data.source.startswith("hf:"):
        console.print(f"[yellow]note:[/] {escape(data.source)} has no test or validation split; no test accuracy to "
                      "report (--eval-split NAME holds out another split)", highlight=False)
    elif not len(data.test):
        console.print(f"[yellow]note:[/] {escape(data.source)} has no test split; no test accuracy to report",
                      highlight=False)


@dataclass
class _Examples:
    """What a static run trains on: the rows ``indices`` of ``data``'s training split with ``labels`` (and
    ``gamma``, the manifest's weights), named ``subset``; the label noise applied, the manifest and its path."""

    data: LoadedData
    labels: torch.Tensor
    indices: torch.Tensor
    subset: str
    gamma: torch.Tensor | None = None
    noise: dict | None = None
    manifest: Manifest | None = None
    path: str | Path | None = None


def _all_examples(data: DataSpec) -> _Examples:
    with loading(data.source):
        loaded = data.load()
    _say_held_out(loaded)
    labels, noise, _ = data.training_labels(loaded)
    return _Examples(loaded, labels, torch.arange(len(labels)), "full", noise=noise)


def _manifest_examples(manifest: Manifest | str | Path, data: DataSpec | None, force: bool) -> _Examples:
    """A manifest's subset of the data it names (refused on other data unless ``force``: then a warning)."""
    chosen = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    loaded = _load_recorded(chosen.dataset, data)
    _say_held_out(loaded)
    counts = torch.bincount(loaded.train.y, minlength=loaded.num_classes).tolist()
    warning = chosen.check_dataset(fingerprint=loaded.fingerprint, num_examples=len(loaded.train), force=force,
                                   class_counts=counts, files_fingerprint=loaded.record().get("files_fingerprint"))
    if warning:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    labels = torch.from_numpy(chosen.training_labels(loaded.train.y.numpy()))
    return _Examples(loaded, labels, torch.from_numpy(chosen.indices), chosen.method["name"],
                     torch.from_numpy(chosen.weights), manifest=chosen,
                     path=None if isinstance(manifest, Manifest) else manifest)


def _random_baseline(examples: _Examples, seed: int) -> _Examples:
    """The manifest's per-class counts drawn uniformly (``random_subset``); gamma: how many examples of its class
    each pick stands for."""
    per_class, labels = examples.manifest.per_class, examples.labels
    picked = random_subset(labels, per_class, seed)
    sizes = torch.bincount(labels, minlength=len(per_class)).double()
    gamma = (sizes / torch.tensor(per_class, dtype=torch.float64).clamp_min(1))[labels[picked]]
    return _Examples(examples.data, labels, picked, "random", gamma)


def _train_static(examples: _Examples, config: TrainConfig, spec: ModelSpec, baseline: str | None, seed: int,
                  device: torch.device) -> TrainResult:
    """``train`` on a fixed set of examples (and on the random baseline): SGD for ``config.epochs`` shuffled epochs."""
    if spec.name is None and examples.manifest is not None:  # the model the manifest's features came from
        spec = replace(spec, name=(examples.manifest.model or {}).get("features", {}).get("model"))
    described = "full training split" if examples.manifest is None else f"{examples.subset} subset"
    result = _fit(examples, config, spec, seed, device, described)
    if baseline is not None:  # the same seed and schedule
        result.baseline = _fit(_random_baseline(examples, seed), config, spec, seed, device, "random baseline")
    data = examples.data
    result.record.update({
        "epochs": config.epochs, "model": result.model_name, "weighted": config.weighted, "seed": seed,
        "manifest": None if examples.path is None else str(examples.path), "dataset": data.source,
        "eval_split": data.eval_split, "train": replace(config, weighted=False).to_dict(),  # weighted: on its own
        "label_noise": examples.noise, "augment": config.augment, "amp": config.amp,
        "checkpoint": None if spec.checkpoint is None else checkpoint_record(spec.checkpoint)})
    if result.baseline is not None:
        result.record.update(baseline=result.baseline.record, difference=result.difference)
    return result


def _fit(examples: _Examples, config: TrainConfig, spec: ModelSpec, seed: int, device: torch.device,
         description: str) -> TrainResult:
    """One static run (``prune.training.fit_and_test``), named ``description`` in its progress and per-epoch lines;
    its record holds the run's own fields."""
    rows = TrainingRows(examples.labels, examples.indices, examples.gamma if config.weighted else None)
    run = fit_and_test(examples.data, rows, config, spec, seed=seed, device=device, description=description)
    model = run.pop("model")
    return TrainResult(run["test_accuracy"], run["test_loss"], run["history"], run["train_examples"],
                       run["wall_seconds"], model, spec.model_name(examples.data), subset=examples.subset, record=run)


def _train_dynamic(data: DataSpec, config: DynamicConfig, spec: ModelSpec, seed: int,
                   device: str | torch.device) -> TrainResult:
    """``train`` with selection during training (``prune.dynamic.run_dynamic``)."""
    if spec.checkpoint is not None:
        raise PruneError("a dynamic run trains a fresh model; drop the checkpoint (--checkpoint)")
    torch_device = _device(device)
    with loading(data.source):
        loaded = data.load()
    _say_held_out(loaded)
    labels, noise, _ = data.training_labels(loaded)
    if config.subset_size > len(loaded.train):
        console.print(f"[yellow]note:[/] --subset-size {config.subset_size} exceeds the {len(loaded.train)} training "
                      "examples; each subset is the whole training set", highlight=False)
    warm_up(torch_device)  # the process's one-off start-up stays out of the seconds
    start = time.perf_counter()
    result = run_dynamic(loaded, config, model_name=spec.model_name(loaded), seed=seed, device=torch_device,
                         labels=labels, dataset_record=dataset_record(loaded, data.data_root),
                         description=f"dynamic {config.kind}")
    wall = time.perf_counter() - start
    counts = result.log["result"]
    extra = {"selections": counts["selections"], "forward_examples": counts["forward_examples"],
             "selection_seconds": result.timings["selection_seconds"],
             "selection_point_seconds": result.timings["selection_point_seconds"], "log": None,
             "checks": len(result.log["checks"]), "label_noise": noise}
    return _dynamic_result(result, loaded, wall, None, extra)


def _replay(data: DataSpec | None, log: dict, path: str | Path | None, force: bool,
            device: str | torch.device) -> TrainResult:
    """``train`` on a subset log's batches (``prune.dynamic.replay``), on the data it names."""
    torch_device = _device(device)
    record = log["dataset"]
    loaded = _load_recorded(record, data, what="subset log")
    _say_held_out(loaded)
    counts = torch.bincount(loaded.train.y, minlength=loaded.num_classes).tolist()
    problem = dataset_mismatch(record, fingerprint=loaded.fingerprint, num_examples=len(loaded.train),
                               class_counts=counts, what="subset log")
    if problem is not None:
        message = f"subset log was made for {record['source']!r} but the data given does not match: {problem}"
        if not force:
            raise PruneError(message + "; pass the dataset the log was made from, or --force")
        beyond = subset_log.beyond(log, len(loaded.train))
        if beyond:
            raise PruneError(f"{message}; {beyond} of its indices and flipped labels lie beyond the "
                             f"{len(loaded.train)} examples given, so not even --force can use it")
        console.print(f"[yellow]warning:[/] {escape(message)} (continuing because of --force)")
    console.print(f"replaying {path or 'the subset log'}: {len(log['selections'])} selection points, "
                  f"{log['budget']['steps']} steps; model, seed, epochs, lr and batches come from the log",
                  highlight=False)
    warm_up(torch_device)
    start = time.perf_counter()
    result = replay(log, loaded, device=torch_device)
    wall = time.perf_counter() - start
    extra = {"replayed": None if path is None else str(path), "selections": len(log["selections"])}
    return _dynamic_result(result, loaded, wall, path, extra)


def _dynamic_result(result: DynamicResult, data: LoadedData, wall: float, path: str | Path | None,
                    extra: dict) -> TrainResult:
    """The ``TrainResult`` of a dynamic run or replay; its record, with the run's ``extra`` fields."""
    settings, epochs, n = result.log["settings"], len(result.log["budget"]["epoch_steps"]), len(data.train)
    trained = len({i for point in result.log["selections"] for batch in point["batches"] for i in batch})
    record = {"test_accuracy": result.test["accuracy"], "test_loss": result.test["loss"], "dynamic": settings["kind"],
              "fraction": settings["fraction"], "backprops": result.backprops, "full_data_backprops": n * epochs,
              "train_examples": trained, "epochs": epochs, "wall_seconds": wall, "model": settings["model"],
              "weighted": bool(settings["weighted"]), "seed": settings["seed"],
              "manifest": None if path is None else str(path), "dataset": data.source, "eval_split": data.eval_split,
              **extra, "history": result.history}
    return TrainResult(result.test["accuracy"], result.test["loss"], result.history, trained, wall, result.model,
                       settings["model"], result.log, result.backprops, settings["kind"], record=record)


def bench(config: BenchConfig, device: str | torch.device = "auto", *, reuse: bool = True) -> list[dict]:
    """Run the evaluation protocol (``prune.bench``): every method, fraction, label noise and seed of ``config``,
    one warm-up per seed shared by every row; one row per cell, and the report in ``config.out``.
    ``reuse`` reads the cells an earlier run finished with the same settings instead of computing them."""
    return run_bench(config, _device(device), reuse=reuse)
