"""The manifest: which training examples were chosen, with what weights, and how.

A manifest is a JSON file (schema ``prune.manifest/1``, documented in manifests/README.md).
It is the tool's product: `prune train` trains on it, ``Manifest.apply`` (and `prune filter`)
filters a Hugging Face dataset with its ``indices``. Loading validates everything a consumer relies on.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prune import __version__
from prune.atomic import write_text
from prune.errors import PruneError

SCHEMA = "prune.manifest/1"


def creation_time() -> str:
    """UTC time in ISO format; ``SOURCE_DATE_EPOCH`` (whole seconds since 1970) pins it for byte-identical manifests."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    try:
        if epoch and not epoch.isdigit():
            raise ValueError
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch) if epoch else time.time()))
    except (ValueError, OverflowError, OSError):
        raise PruneError(f"SOURCE_DATE_EPOCH must be a whole number of seconds since 1970, got {epoch!r}; "
                         "fix it or unset it") from None


@dataclass
class Manifest:
    """A selected subset of a dataset's training split.

    ``indices`` are sorted, unique positions in the training split; ``weights[i]`` belongs to
    ``indices[i]`` (CRAIG's gamma: how many examples that one stands for).
    """

    indices: np.ndarray
    weights: np.ndarray
    dataset: dict
    method: dict
    budget: dict
    per_class: list[int]
    seed: int | None = None
    label_noise: dict | None = None
    model: dict | None = None
    selection: dict = field(default_factory=dict)
    prune_version: str = __version__
    created_at: str = field(default_factory=creation_time)

    def __post_init__(self):
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.weights = np.asarray(self.weights, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.indices)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "prune_version": self.prune_version,
            "created_at": self.created_at,
            "dataset": self.dataset,
            "method": self.method,
            "budget": self.budget,
            "per_class": [int(c) for c in self.per_class],
            "seed": self.seed,
            "label_noise": self.label_noise,
            "model": self.model,
            "selection": self.selection,
            "indices": [int(i) for i in self.indices],
            "weights": [_number(w) for w in self.weights],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Validate, then write atomically (temporary name, then rename)."""
        validate(self.to_dict(), source=str(path))
        write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """Read and validate a manifest; a problem raises ``PruneError`` naming the file."""
        path = Path(path)
        if path.is_dir():
            raise PruneError(f"manifest {path} is a folder; pass the manifest's .json file")
        if not path.is_file():
            raise PruneError(f"manifest {path} does not exist; check the path or run `prune select --out {path}`")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PruneError(f"manifest {path} is not valid JSON ({err}); was it truncated or written by another tool?") from None
        validate(raw, source=str(path))
        return cls(
            indices=np.asarray(raw["indices"], dtype=np.int64),
            weights=np.asarray(raw["weights"], dtype=np.float64),
            dataset=raw["dataset"],
            method=raw["method"],
            budget=raw["budget"],
            per_class=raw["per_class"],
            seed=raw.get("seed"),
            label_noise=raw.get("label_noise"),
            model=raw.get("model"),
            selection=raw.get("selection") or {},
            prune_version=raw["prune_version"],
            created_at=raw["created_at"],
        )

    # -- use -----------------------------------------------------------------------------
    def check_dataset(self, *, fingerprint: str, num_examples: int, force: bool = False,
                      class_counts: list[int] | None = None, files_fingerprint: str | None = None) -> str | None:
        """Refuse data other than the manifest was made for; return a warning when forced.

        With the data's ``class_counts`` (examples per class) and a manifest that records
        them, a fingerprint mismatch is told apart: same counts means the order differs.
        ``files_fingerprint`` (a ``folder:`` source's file list) is compared when both have one.
        """
        mine = self.dataset
        problem = dataset_mismatch(mine, fingerprint=fingerprint, num_examples=num_examples, class_counts=class_counts,
                                   files_fingerprint=files_fingerprint)
        if problem is None:
            return None
        message = f"manifest was made for {mine['source']!r} but the data given does not match: {problem}"
        if force:
            return message + " (continuing because of --force)"
        raise PruneError(message + "; pass the dataset the manifest was made from, or --force")

    def apply(self, dataset, *, label_column: str | None = None, force: bool = False,
              keep_in_memory: bool = False):
        """The selected rows of a Hugging Face ``datasets.Dataset``, checked first.

        Checks the dataset's size and label fingerprint (labels read from ``label_column``:
        default the column the manifest records, else ``"label"``) and raises ``PruneError``
        saying whether size, labels or only their order differ; ``force=True`` warns
        (``UserWarning``) instead. Returns ``dataset.select(indices).flatten_indices()``
        (``keep_in_memory`` is passed to ``flatten_indices``). A ``DatasetDict`` gives the
        manifest's split. The labels are the clean ones: apply any recorded label noise
        yourself with ``training_labels``.
        """
        from prune.data.hf_filter import apply_manifest

        return apply_manifest(self, dataset, label_column=label_column, force=force, keep_in_memory=keep_in_memory)

    def training_labels(self, labels: np.ndarray) -> np.ndarray:
        """The labels the selection used: ``labels`` with the recorded label noise applied."""
        labels = np.array(labels, dtype=np.int64, copy=True)
        if self.label_noise:
            labels[np.asarray(self.label_noise["flipped"], dtype=np.int64)] = self.label_noise["noisy_labels"]
        return labels


def dataset_mismatch(record: dict, *, fingerprint: str, num_examples: int, class_counts: list[int] | None = None,
                     what: str = "manifest", files_fingerprint: str | None = None) -> str | None:
    """What differs between the data ``record`` describes (a manifest's or store's ``dataset``) and the data given.

    None when size and label fingerprint match; else whether the size, the labels (the count
    per class differs) or only their order differ -- the last two told apart only with the
    data's ``class_counts`` and a record that holds its own.
    """
    if record["num_examples"] != num_examples:
        return f"size differs: {what} has {record['num_examples']} training examples, the data has {num_examples}"
    if files_fingerprint and record.get("files_fingerprint") not in (None, files_fingerprint):
        return (f"files differ: the folder lists other image files (names or order) than when the {what} was made, "
                "so its indices would pick other images")
    if record["fingerprint"] == fingerprint:
        return None
    recorded = record.get("class_counts")
    if recorded is None or class_counts is None:
        return "labels or their order differ (label fingerprints do not match)"
    if _trimmed(recorded) == _trimmed(class_counts):
        return ("order differs: the data hold the same labels (the same count per class) in a different "
                f"order, so the {what}'s indices would pick other examples (was it shuffled or sorted?)")
    changed = [c for c in range(max(len(recorded), len(class_counts)))
               if _count(recorded, c) != _count(class_counts, c)]
    shown = ", ".join(f"class {c}: {_count(recorded, c)} vs {_count(class_counts, c)}" for c in changed[:3])
    return f"labels differ: examples per class do not match ({shown}{', ...' if len(changed) > 3 else ''})"


def _trimmed(counts) -> list[int]:
    counts = [int(c) for c in counts]
    while counts and counts[-1] == 0:
        counts.pop()
    return counts


def _count(counts, c: int) -> int:
    return int(counts[c]) if c < len(counts) else 0


def _number(w: float):
    return int(w) if float(w).is_integer() else float(w)


def validate(raw: dict, *, source: str) -> None:
    """Check a decoded manifest; raise ``PruneError`` with the first problem found."""

    def fail(what: str):
        raise PruneError(f"manifest {source} is invalid: {what}")

    if not isinstance(raw, dict):
        fail("the top level is not a JSON object")
    schema = raw.get("schema")
    if schema != SCHEMA:
        fail(f"schema is {schema!r}, this prune reads {SCHEMA!r}; re-create it with this version of prune")
    for key in ("prune_version", "created_at", "dataset", "method", "budget", "per_class", "indices", "weights"):
        if key not in raw:
            fail(f"missing key {key!r}")
    dataset = raw["dataset"]
    for key in ("source", "split", "num_examples", "num_classes", "fingerprint"):
        if not isinstance(dataset, dict) or key not in dataset:
            fail(f"dataset is missing {key!r}")
    n = dataset["num_examples"]
    if not _is_int(n) or n <= 0:
        fail("dataset.num_examples must be a positive integer")
    num_classes = dataset["num_classes"]
    if not _is_int(num_classes) or num_classes <= 0:
        fail("dataset.num_classes must be a positive integer")
    if not isinstance(dataset["source"], str) or not isinstance(dataset["fingerprint"], str):
        fail("dataset.source and dataset.fingerprint must be strings")
    counts = dataset.get("class_counts")
    if counts is not None and not (isinstance(counts, list) and len(counts) == num_classes
                                   and all(_is_int(c) and c >= 0 for c in counts)):
        fail("dataset.class_counts must list one non-negative count per class")
    for key, kind in (("method", "an object"), ("budget", "an object")):
        if not isinstance(raw[key], dict):
            fail(f"{key} must be {kind}")
    if not isinstance(raw["method"].get("name"), str):
        fail("method.name must be a string")
    for key in ("model", "selection", "label_noise"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            fail(f"{key} must be an object or null")
    if raw.get("seed") is not None and not _is_int(raw["seed"]):
        fail("seed must be an integer or null")
    indices, weights = raw["indices"], raw["weights"]
    if not isinstance(indices, list) or not all(_is_int(i) for i in indices):
        fail("indices must be a list of integers")
    if any(i < 0 for i in indices):
        fail(f"indices contain a negative value ({min(indices)})")
    if indices and max(indices) >= n:
        fail(f"index {max(indices)} is out of range for {n} training examples")
    if any(b <= a for a, b in zip(indices, indices[1:])):
        dup = len(indices) != len(set(indices))
        fail("indices contain duplicates" if dup else "indices are not sorted ascending")
    if not isinstance(weights, list) or len(weights) != len(indices):
        fail(f"weights has {len(weights) if isinstance(weights, list) else 'no'} entries, indices has {len(indices)}")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights):
        fail("weights must be finite non-negative numbers")
    per_class = raw["per_class"]
    if (not isinstance(per_class, list) or len(per_class) != num_classes
            or not all(_is_int(k) and k >= 0 for k in per_class) or sum(per_class) != len(indices)):
        fail("per_class must list one non-negative count per class, summing to the number of indices")
    noise = raw.get("label_noise")
    if noise:
        flipped, noisy = noise.get("flipped"), noise.get("noisy_labels")
        if not isinstance(flipped, list) or not isinstance(noisy, list) or len(flipped) != len(noisy):
            fail("label_noise needs equally long lists 'flipped' and 'noisy_labels'")
        if not all(_is_int(i) for i in flipped) or not all(_is_int(y) for y in noisy):
            fail("label_noise.flipped and label_noise.noisy_labels must hold integers")
        if flipped and (min(flipped) < 0 or max(flipped) >= n):
            fail("label_noise.flipped has an index out of range")
        if noisy and (min(noisy) < 0 or max(noisy) >= num_classes):
            fail(f"label_noise.noisy_labels has a label outside 0..{num_classes - 1}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
