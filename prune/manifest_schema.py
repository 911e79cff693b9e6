"""The manifest's schema (``prune.manifest/1``, manifests/README.md): every field's type and range.

``validate`` checks a decoded manifest, all of it (a manifest is small), and raises one
``PruneError`` naming the file, the field's path (``dataset.class_counts[3]``) and what is wrong.
Fields prune does not read (``method.params``, ``selection`` but its per-class ``dropped_*``
counts, ...) may hold any JSON, nested at most ``MAX_DEPTH`` deep. The checks of single values below ``validate`` and the dataset record
are shared with the feature store's attributes (``prune.features.store_schema``).
"""

from __future__ import annotations

import math
import reprlib
import sys

from prune.errors import PruneError

SCHEMA = "prune.manifest/1"
MAX_DEPTH = 32
INT64 = 2**63
REQUIRED = ("prune_version", "created_at", "dataset", "method", "budget", "per_class", "indices", "weights")


class Invalid(Exception):
    """One problem with one field; the caller turns it into a ``PruneError`` naming the file."""


def validate(raw, *, source: str) -> None:
    """Check a decoded manifest; raise ``PruneError`` with the first problem found."""
    try:
        check_manifest(raw)
    except Invalid as err:
        raise PruneError(f"manifest {source} is invalid: {err}") from None


def check_manifest(raw) -> None:
    if not isinstance(raw, dict):
        raise Invalid("the top level is not a JSON object")
    if raw.get("schema") != SCHEMA:
        raise Invalid(f"schema is {show(raw.get('schema'))}, this prune reads {SCHEMA!r}; "
                      "re-create it with this version of prune")
    require(raw, REQUIRED)
    check_depth(raw)
    string(raw["prune_version"], "prune_version")
    string(raw["created_at"], "created_at")
    dataset = dataset_record(raw["dataset"], "dataset")
    n, classes = dataset["num_examples"], dataset["num_classes"]
    known_source(dataset["source"], "dataset.source")
    method = obj(raw["method"], "method")
    known_method(method.get("name"), "method.name")
    optional(method, "params", obj, "method.params")
    indices = check_indices(raw["indices"], n)
    check_weights(raw["weights"], len(indices))
    check_budget(raw["budget"], len(indices))
    per_class = counts(raw["per_class"], "per_class", classes)
    if sum(per_class) != len(indices):
        raise Invalid(f"per_class sums to {sum(per_class)}, but there are {len(indices)} indices")
    optional(raw, "seed", seed, "seed")
    if raw.get("label_noise") is not None:
        label_noise(raw["label_noise"], "label_noise", n, classes)
    if raw.get("model") is not None:
        model = obj(raw["model"], "model")
        if optional(model, "features", obj, "model.features") is not None:
            optional(model["features"], "model", string, "model.features.model")
        optional(model, "feature_seed", seed, "model.feature_seed")
    selection = optional(raw, "selection", obj, "selection") or {}
    for key in ("dropped_hard", "dropped_learned"):  # per class; prune inspect adds them up
        if selection.get(key) is not None:
            counts(selection[key], f"selection.{key}", classes)


def known_method(value, path: str) -> str:
    """A selection method's name: one of ``prune.selection.methods.METHODS`` (read now: the list grows)."""
    from prune.selection.methods import METHODS

    if string(value, path) not in METHODS:
        raise Invalid(f"{path} is {show(value)}, not a selection method prune knows ({', '.join(METHODS)})")
    return value


def known_source(value, path: str) -> str:
    """A data source as ``LoadedData.source`` records it: a dataset's name or ``npz:``/``hf:``/``folder:`` PATH."""
    from prune.data.sources import DATASETS

    names = [name for name in DATASETS if not name.endswith(":PATH")]
    prefixes = tuple(name[:-len("PATH")] for name in DATASETS if name.endswith(":PATH"))
    text = string(value, path).strip()
    if text not in names and not (text.lower().startswith(prefixes) and text.split(":", 1)[1].strip()):
        raise Invalid(f"{path} is {show(value)}, not a data source prune reads ({', '.join(DATASETS)})")
    return value


def seed(value, path: str) -> int:
    """A random seed: an integer >= 0 (numpy's seeds are never negative)."""
    return integer(value, path, low=0)


def dataset_record(value, path: str) -> dict:
    """The record of the training split a manifest (or store) was made from."""
    record = obj(value, path)
    require(record, ("source", "split", "num_examples", "num_classes", "fingerprint"), path)
    string(record["source"], f"{path}.source")
    string(record["split"], f"{path}.split")
    n = integer(record["num_examples"], f"{path}.num_examples", low=1)
    classes = integer(record["num_classes"], f"{path}.num_classes", low=1)
    string(record["fingerprint"], f"{path}.fingerprint")
    if record.get("class_counts") is not None:
        per_class = counts(record["class_counts"], f"{path}.class_counts", classes)
        if sum(per_class) != n:
            raise Invalid(f"{path}.class_counts sums to {sum(per_class)}, not {path}.num_examples ({n})")
    if record.get("columns") is not None:
        for role, name in obj(record["columns"], f"{path}.columns").items():
            string(name, f"{path}.columns[{role!r}]")
    optional(record, "root", string, f"{path}.root")
    return record


def check_indices(value, n: int) -> list[int]:
    """Sorted, unique positions in 0..n-1; at least one."""
    indices = integers(value, "indices")
    if not indices:
        raise Invalid("indices is empty: the manifest selects no examples")
    if min(indices) < 0:
        raise Invalid(f"indices contain a negative value ({show(min(indices))})")
    if max(indices) >= n:
        raise Invalid(f"index {show(max(indices))} is out of range for {n} training examples")
    if any(b <= a for a, b in zip(indices, indices[1:])):
        raise Invalid("indices contain duplicates" if len(set(indices)) != len(indices)
                      else "indices are not sorted ascending")
    return indices


def check_weights(value, count: int) -> None:
    if not isinstance(value, list) or len(value) != count:
        raise Invalid(f"weights has {len(value) if isinstance(value, list) else 'no'} entries, indices has {count}")
    for i, weight in enumerate(value):
        number(weight, f"weights[{i}]", low=0)


def check_budget(value, count: int) -> None:
    budget = obj(value, "budget")
    require(budget, ("fraction", "count", "balance"), "budget")
    if budget["fraction"] is not None and not 0 < number(budget["fraction"], "budget.fraction") <= 1:
        raise Invalid(f"budget.fraction must be in (0, 1], got {show(budget['fraction'])}")
    if integer(budget["count"], "budget.count") != count:
        raise Invalid(f"budget.count is {budget['count']}, but there are {count} indices")
    string(budget["balance"], "budget.balance")


def label_noise(value, path: str, n: int, classes: int) -> dict:
    """Flipped labels: ``flipped`` indices in 0..n-1 and their ``noisy_labels`` in 0..classes-1."""
    noise = noise_settings(value, path)
    require(noise, ("flipped", "noisy_labels"), path)
    flipped = integers(noise["flipped"], f"{path}.flipped", 0, n - 1)
    noisy = integers(noise["noisy_labels"], f"{path}.noisy_labels", 0, classes - 1)
    if len(flipped) != len(noisy):
        raise Invalid(f"{path}.flipped has {len(flipped)} entries, {path}.noisy_labels {len(noisy)}")
    return noise


def noise_settings(value, path: str) -> dict:
    """How labels were flipped (a store records only this): ``fraction`` in [0, 1) and ``seed``."""
    noise = obj(value, path)
    require(noise, ("fraction", "seed"), path)
    if not 0 <= number(noise["fraction"], f"{path}.fraction") < 1:
        raise Invalid(f"{path}.fraction must be in [0, 1), got {show(noise['fraction'])}")
    seed(noise["seed"], f"{path}.seed")
    return noise


# ----------------------------------------------------------------------------- single values


def require(record: dict, keys, path: str = "") -> None:
    for key in keys:
        if key not in record:
            raise Invalid(f"missing key {(f'{path}.' if path else '') + key!r}")


def optional(record: dict, key: str, check, path: str):
    """``check`` the value at ``key`` unless it is absent or null; return it (or None)."""
    return None if record.get(key) is None else check(record[key], path)


def obj(value, path: str) -> dict:
    if not isinstance(value, dict):
        raise Invalid(f"{path} must be an object, got {show(value)}")
    return value


def string(value, path: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{path} must be a string, got {show(value)}")
    return value


def integer(value, path: str, low: int = -INT64, high: int = INT64 - 1) -> int:
    """A whole number in low..high (by default, what fits in 64 bits)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"{path} must be an integer, got {show(value)}")
    if not low <= value <= high:
        if high < INT64 - 1:
            bounds = f"in {low}..{high}"
        else:
            bounds = "within 64 bits" if low == -INT64 else f">= {low}, within 64 bits"
        raise Invalid(f"{path} must be {bounds}, got {show(value)}")
    return value


def number(value, path: str, low: float = -math.inf) -> float:
    """A finite number >= low; integers too large for a float are refused."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= sys.float_info.max:
        value = float(value)
    if not isinstance(value, float) or not math.isfinite(value) or value < low:
        at_least = "" if low == -math.inf else f" >= {low:g}"
        raise Invalid(f"{path} must be a finite number{at_least}, got {show(value)}")
    return value


def integers(value, path: str, low: int = -INT64, high: int = INT64 - 1) -> list[int]:
    if not isinstance(value, list):
        raise Invalid(f"{path} must be a list of integers, got {show(value)}")
    for i, item in enumerate(value):
        integer(item, f"{path}[{i}]", low, high)
    return value


def counts(value, path: str, classes: int) -> list[int]:
    """One non-negative count per class."""
    values = integers(value, path, 0)
    if len(values) != classes:
        raise Invalid(f"{path} must hold one count per class ({classes}), got {len(values)}")
    return values


def check_depth(value, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    raise Invalid(f"values are nested more than {limit} levels deep")
                stack.append((child, depth + 1))


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 30
_SHORT.maxlong, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 24, 4, 4, 2


def show(value) -> str:
    """A value as a message shows it: kind and a short repr."""
    return {dict: "an object ", list: "a list "}.get(type(value), "") + _SHORT.repr(value)
