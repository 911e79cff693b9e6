"""The manifest: which training examples were chosen, with what weights, and how.

A manifest is a JSON file (schema ``prune.manifest/1``, documented in manifests/README.md).
It is the tool's product: `prune train` trains on it, `datasets.Dataset.select` filters with
its ``indices``. Loading validates everything a consumer relies on.
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
    """UTC time in ISO format; ``SOURCE_DATE_EPOCH`` pins it for byte-identical manifests."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    stamp = int(epoch) if epoch else time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


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
    def check_dataset(self, *, fingerprint: str, num_examples: int, force: bool = False) -> str | None:
        """Refuse data other than the manifest was made for; return a warning when forced."""
        mine = self.dataset
        problem = None
        if mine["num_examples"] != num_examples:
            problem = f"size differs: manifest has {mine['num_examples']} training examples, the data has {num_examples}"
        elif mine["fingerprint"] != fingerprint:
            problem = "labels or their order differ (label fingerprints do not match)"
        if problem is None:
            return None
        message = f"manifest was made for {mine['source']!r} but the data given does not match: {problem}"
        if force:
            return message + " (continuing because of --force)"
        raise PruneError(message + "; pass the dataset the manifest was made from, or --force")

    def training_labels(self, labels: np.ndarray) -> np.ndarray:
        """The labels the selection used: ``labels`` with the recorded label noise applied."""
        labels = np.array(labels, dtype=np.int64, copy=True)
        if self.label_noise:
            labels[np.asarray(self.label_noise["flipped"], dtype=np.int64)] = self.label_noise["noisy_labels"]
        return labels


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
    if not isinstance(n, int) or n <= 0:
        fail("dataset.num_examples must be a positive integer")
    indices, weights = raw["indices"], raw["weights"]
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
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
    if not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights):
        fail("weights must be finite non-negative numbers")
    per_class = raw["per_class"]
    if not isinstance(per_class, list) or len(per_class) != dataset["num_classes"] or sum(per_class) != len(indices):
        fail("per_class must list one count per class, summing to the number of indices")
    noise = raw.get("label_noise")
    if noise:
        flipped, noisy = noise.get("flipped"), noise.get("noisy_labels")
        if not isinstance(flipped, list) or not isinstance(noisy, list) or len(flipped) != len(noisy):
            fail("label_noise needs equally long lists 'flipped' and 'noisy_labels'")
        if flipped and (min(flipped) < 0 or max(flipped) >= n):
            fail("label_noise.flipped has an index out of range")
