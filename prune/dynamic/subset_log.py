"""The subset log of a dynamic run (``prune train --dynamic ... --log FILE``): schema ``prune.subsets/1``.

A dynamic run (``prune.dynamic``) selects mini-batch coresets *during* training. Its log records
everything needed to replay it: the settings, the dataset record, the budget, and per selection
point the coresets (indices and weights) and the batches trained from them, in order. Replaying
(``prune train --manifest FILE``) trains on exactly those batches in that order with the same
model, seed and optimiser, so on CPU it gives the same final weights, bit for bit. Documented in
manifests/README.md ("Subset logs").

Layout (JSON object)::

    schema          "prune.subsets/1"
    prune_version, created_at
    dataset         the manifest's dataset record (source, split, num_examples, num_classes,
                    fingerprint, class_counts, optional root / columns)
    label_noise     null, or the labels trained on where they differ from the data's: flipped,
                    noisy_labels (as in manifests; a replay applies them)
    settings        every knob of the run (kind, fraction, epochs, batch_size, lr, ..., model, seed)
    budget          fraction, num_examples, epochs, backprops (planned = f * n * epochs, rounded
                    half up), batch_size, epoch_backprops [per epoch], epoch_steps [per epoch]
    selections      list of selection points, in order:
                      step (global step before which it was made, 0-based), epoch (1-based),
                      reason ("start", "every", "rho"), subsets P, coresets
                      [{"indices": [...], "weights": [...]}] (each at most batch_size long),
                      batch_coresets [coreset id of each batch], batches [[dataset indices]]
                      (the batches trained from this point until the next, in order),
                      objective, and for the crest rule t1 and hessian_norm
    checks          the crest rule's evaluations: step, rho, reselect
    result          backprops (counted), steps, forward_examples, dropped_hard (examples the
                      difficulty stage left out, summed over coresets), test_accuracy, test_loss
    (no timings: a run repeated with the same seed writes the same bytes; they go to --metrics)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from prune.atomic import atomic_path, input_kind, write_text
from prune.errors import PruneError
from prune.manifest_schema import (Invalid, check_depth, dataset_record, integer, number, obj, optional, require, seed,
                                   show, string)

SCHEMA = "prune.subsets/1"


def is_subset_log(path: str | os.PathLike) -> bool:
    """True when ``path`` is a JSON file whose ``schema`` is ``prune.subsets/...`` (cheap sniff)."""
    path = Path(path)
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="ignore")
    except OSError:
        return False
    return '"prune.subsets/' in head


def load(path: str | os.PathLike) -> dict:
    """Read and validate a subset log; a problem raises ``PruneError`` naming the file."""
    path = Path(path)
    kind = input_kind(path, "subset log")
    if kind is None:
        raise PruneError(f"subset log {path} does not exist; check the path or run `prune train --dynamic ... --log {path}`")
    if kind != "file":
        raise PruneError(f"subset log {path} is a {kind}; pass the log's .json file")
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise PruneError(f"cannot read subset log {path} ({err.strerror or err})") from None
    except ValueError as err:  # not JSON, not UTF-8, or an integer of thousands of digits
        raise PruneError(f"subset log {path} is not valid JSON ({err}); was it truncated?") from None
    except RecursionError:
        raise PruneError(f"subset log {path} is invalid: values are nested too deeply to read") from None
    validate(raw, source=str(path))
    return raw


def save(log: dict, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Validate, then write atomically; without ``overwrite`` nothing at ``path`` is replaced (``PruneError``)."""
    validate(log, source=str(path))
    write_text(path, json.dumps(log, separators=(",", ":")) + "\n", overwrite=overwrite)
    return Path(path)


REASONS = ("start", "every", "rho")  # why a selection point was made: the first, the every-E rule, rho > tau


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(raw: dict, *, source: str) -> None:
    """Check a decoded subset log; raise ``PruneError`` with the first problem found."""
    try:
        if not isinstance(raw, dict):
            raise Invalid("the top level is not a JSON object")
        if raw.get("schema") != SCHEMA:
            raise Invalid(f"schema is {raw.get('schema')!r}, this prune reads {SCHEMA!r}")
        require(raw, ("prune_version", "created_at", "dataset", "settings", "budget", "selections"))
        check_types(raw)
        check_replay(raw)
    except Invalid as err:
        raise PruneError(f"subset log {source} is invalid: {err}") from None


def check_replay(raw: dict) -> None:
    """What a replay relies on: label noise in range, and selection points whose batches add up to the budget."""
    dataset, settings, budget = raw["dataset"], raw["settings"], raw["budget"]
    n = dataset["num_examples"]
    noise = raw.get("label_noise")
    if noise is not None:
        flipped, noisy = (noise.get("flipped"), noise.get("noisy_labels")) if isinstance(noise, dict) else (None, None)
        if not isinstance(flipped, list) or not isinstance(noisy, list) or len(flipped) != len(noisy) or not all(
                _is_int(i) and 0 <= i < n for i in flipped) or not all(
                _is_int(y) and 0 <= y < dataset["num_classes"] for y in noisy):
            raise Invalid("label_noise needs equally long lists 'flipped' (indices) and 'noisy_labels' (labels in range)")
    require(budget, ("backprops", "epoch_steps", "epoch_backprops"), "budget")
    epoch_steps = budget["epoch_steps"]
    if not isinstance(epoch_steps, list) or not all(_is_int(s) and s >= 0 for s in epoch_steps):
        raise Invalid("budget.epoch_steps must list the number of steps of each epoch")
    selections = raw["selections"]
    if not isinstance(selections, list) or (sum(epoch_steps) and not selections):
        raise Invalid("selections must be a non-empty list")
    steps, backprops, previous = 0, 0, -1
    for s, point in enumerate(selections):
        batch_sizes = _check_point(point, f"selection {s}", (previous, steps), n, settings["batch_size"])
        previous, steps, backprops = steps, steps + len(batch_sizes), backprops + sum(batch_sizes)
    if steps != sum(epoch_steps):
        raise Invalid(f"the selections hold {steps} batches, budget.epoch_steps says {sum(epoch_steps)}")
    if backprops != budget["backprops"]:
        raise Invalid(f"the batches hold {backprops} examples, budget.backprops says {budget['backprops']}")


def _check_point(point, where: str, at: tuple[int, int], n: int, m: int) -> list[int]:
    """One selection point, made before step ``steps`` (``at``: the previous point's step, ``steps``) and
    after the previous one: its coresets (of at most ``m`` of 0..n-1) and the batches drawn from them;
    returns the batches' sizes."""
    previous, steps = at
    if not isinstance(point, dict):
        raise Invalid(f"{where} is not an object")
    for key in ("step", "epoch", "coresets", "batches", "batch_coresets"):
        if key not in point:
            raise Invalid(f"{where} is missing {key!r}")
    if not _is_int(point["step"]) or point["step"] != steps or point["step"] <= previous:
        raise Invalid(f"{where} starts at step {point['step']!r}, but the batches before it end at step {steps}")
    coresets = point["coresets"]
    if not isinstance(coresets, list) or not coresets:
        raise Invalid(f"{where} has no coresets")
    members = [_check_coreset(coreset, f"{where}, coreset {c}", n, m) for c, coreset in enumerate(coresets)]
    batches, owners = point["batches"], point["batch_coresets"]
    if not isinstance(batches, list) or not isinstance(owners, list) or len(batches) != len(owners):
        raise Invalid(f"{where}: batches and batch_coresets must be lists of the same length")
    for b, (batch, owner) in enumerate(zip(batches, owners)):
        if not _is_int(owner) or not 0 <= owner < len(coresets):
            raise Invalid(f"{where}, batch {b}: batch_coresets entry {owner!r} names no coreset")
        if not isinstance(batch, list) or not batch or not all(_is_int(i) for i in batch):
            raise Invalid(f"{where}, batch {b}: must be a non-empty list of indices")
        if not set(batch) <= members[owner] or len(set(batch)) != len(batch):
            raise Invalid(f"{where}, batch {b}: holds indices that are not in its coreset {owner}")
    return [len(batch) for batch in batches]


def _check_coreset(coreset, where: str, n: int, m: int) -> set[int]:
    """A coreset: at most ``m`` unique indices in 0..n-1, each with a finite weight >= 0; returns its members."""
    idx, w = (coreset.get("indices"), coreset.get("weights")) if isinstance(coreset, dict) else (None, None)
    if not isinstance(idx, list) or not all(_is_int(i) and 0 <= i < n for i in idx):
        raise Invalid(f"{where}: indices must be integers in 0..{n - 1}")
    if len(set(idx)) != len(idx) or len(idx) > m:
        raise Invalid(f"{where}: indices must be unique and at most batch_size ({m})")
    if not isinstance(w, list) or len(w) != len(idx) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in w):
        raise Invalid(f"{where}: weights must be finite non-negative numbers, one per index")
    return set(idx)


def check_types(raw: dict) -> None:
    """The types and ranges of what replaying and ``prune inspect`` read (``prune.manifest_schema``'s checks)."""
    check_depth(raw)
    string(raw["prune_version"], "prune_version")
    string(raw["created_at"], "created_at")
    dataset_record(raw["dataset"], "dataset")
    check_settings(obj(raw["settings"], "settings"))
    budget = obj(raw["budget"], "budget")
    require(budget, ("fraction", "epochs", "backprops", "steps"), "budget")
    number(budget["fraction"], "budget.fraction")
    for key in ("epochs", "backprops", "steps"):
        integer(budget[key], f"budget.{key}", low=0)
    for s, point in enumerate(raw["selections"] if isinstance(raw["selections"], list) else []):
        reason = optional(obj(point, f"selections[{s}]"), "reason", string, f"selections[{s}].reason")
        if reason is not None and reason not in REASONS:
            raise Invalid(f"selections[{s}].reason is {show(reason)}, not one of {', '.join(REASONS)}")
    checks = raw.get("checks") or []
    if not isinstance(checks, list):
        raise Invalid(f"checks must be a list, got {show(checks)}")
    for c, check in enumerate(checks):
        obj(check, f"checks[{c}]")
    if raw.get("result") is not None:
        optional(obj(raw["result"], "result"), "test_accuracy", number, "result.test_accuracy")
    history = raw.get("history")
    if history is not None and not isinstance(history, list):
        raise Invalid(f"history must be a list (one object per epoch), got {show(history)}")
    for e, epoch in enumerate(history or []):
        obj(epoch, f"history[{e}]")


def check_settings(settings: dict) -> None:
    """The run's knobs that a replay reuses."""
    require(settings, ("kind", "model", "seed", "batch_size", "lr", "momentum", "weight_decay", "weighted", "fraction",
                       "update_rule"), "settings")
    for key in ("kind", "model", "update_rule"):
        string(settings[key], f"settings.{key}")
    seed(settings["seed"], "settings.seed")
    integer(settings["batch_size"], "settings.batch_size", low=1)
    optional(settings, "epochs", lambda value, path: integer(value, path, low=0), "settings.epochs")
    for key in ("lr", "momentum", "weight_decay", "fraction"):
        number(settings[key], f"settings.{key}")
    if not isinstance(settings["weighted"], bool):
        raise Invalid(f"settings.weighted must be true or false, got {settings['weighted']!r}")
    if settings["update_rule"] == "every":
        integer(settings.get("every"), "settings.every", low=1)
    else:
        number(settings.get("tau"), "settings.tau")


def batches(log: dict) -> list[tuple[int, int, list[int]]]:
    """Every batch in training order: (selection point, coreset id, dataset indices)."""
    return [(s, owner, batch) for s, point in enumerate(log["selections"])
            for owner, batch in zip(point["batch_coresets"], point["batches"])]


def beyond(log: dict, num_examples: int) -> int:
    """How many recorded indices (coreset members, label flips) lie outside data of ``num_examples`` examples."""
    members = [i for point in log["selections"] for coreset in point["coresets"] for i in coreset["indices"]]
    flipped = (log.get("label_noise") or {}).get("flipped", [])
    return sum(1 for i in [*members, *flipped] if i >= num_examples)


def selection_counts(log: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per training example: how many times it was in a coreset, and how many times it was trained on."""
    n = log["dataset"]["num_examples"]
    selected = np.zeros(n, dtype=np.int64)
    trained = np.zeros(n, dtype=np.int64)
    for point in log["selections"]:
        for coreset in point["coresets"]:
            np.add.at(selected, np.asarray(coreset["indices"], dtype=np.int64), 1)
        for batch in point["batches"]:
            np.add.at(trained, np.asarray(batch, dtype=np.int64), 1)
    return selected, trained


def plot_counts(log: dict, path: str | os.PathLike, title: str = "", *, overwrite: bool = True) -> Path:
    """PNG histograms of how often each example was selected and trained on (matplotlib, Agg);
    without ``overwrite`` an existing ``path`` is not replaced (``PruneError``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    selected, trained = selection_counts(log)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, counts, what in ((axes[0], selected, "times in a coreset"), (axes[1], trained, "times back-propagated")):
        top = int(counts.max()) if len(counts) else 0
        ax.hist(counts, bins=np.arange(top + 2) - 0.5, color="tab:blue", edgecolor="white")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(what)
        ax.set_ylabel("training examples")
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"{log['settings']['kind']} on {log['dataset']['source']}")
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    except OSError as err:
        raise PruneError(f"cannot write {path} ({err.strerror or err}); choose another --plot path") from None
    finally:
        plt.close(fig)
    return path


def summary(log: dict) -> dict:
    """The facts ``prune inspect`` prints about a subset log."""
    selected, trained = selection_counts(log)
    points = log["selections"]
    reasons: dict[str, int] = {}
    for point in points:
        reasons[point.get("reason", "?")] = reasons.get(point.get("reason", "?"), 0) + 1
    checks = log.get("checks") or []
    return {
        "selection_points": len(points),
        "reasons": reasons,
        "coresets": sum(len(p["coresets"]) for p in points),
        "steps": sum(len(p["batches"]) for p in points),
        "backprops": int(trained.sum()),
        "planned_backprops": log["budget"]["backprops"],
        "distinct_selected": int((selected > 0).sum()),
        "distinct_trained": int((trained > 0).sum()),
        "max_selected": int(selected.max()) if len(selected) else 0,
        "mean_selected": float(selected.mean()) if len(selected) else 0.0,
        "checks": len(checks),
        "reselections_by_rho": sum(1 for c in checks if c.get("reselect")),
    }


def counts_histogram(log: dict) -> np.ndarray:
    """How many examples were selected 0, 1, 2, ... times (for quick checks)."""
    selected, _ = selection_counts(log)
    return np.bincount(selected)
