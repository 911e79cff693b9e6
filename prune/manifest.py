"""The manifest: which training examples were chosen, with what weights, and how.

A manifest is a JSON file (schema ``prune.manifest/1``, documented in manifests/README.md).
It is the tool's product: `prune train` trains on it, ``Manifest.apply`` (and `prune filter`)
filters a Hugging Face dataset with its ``indices``. Loading validates everything a consumer relies on.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prune import __version__
from prune.atomic import input_kind, write_text
from prune.errors import PruneError
from prune.manifest_schema import SCHEMA, validate


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

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Validate, then write atomically (temporary name, then rename). An existing ``path`` is
        replaced only with ``overwrite`` (``PruneError`` otherwise, even if it appeared meanwhile)."""
        validate(self.to_dict(), source=str(path))
        write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n", overwrite=overwrite)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """Read and validate a manifest; a problem raises ``PruneError`` naming the file."""
        path = Path(path)
        kind = input_kind(path, "manifest")
        if kind is None:
            raise PruneError(f"manifest {path} does not exist; check the path or run `prune select --out {path}`")
        if kind != "file":
            raise PruneError(f"manifest {path} is a {kind}; pass the manifest's .json file")
        try:
            raw = json.loads(path.read_text())
        except OSError as err:
            raise PruneError(f"cannot read manifest {path} ({err.strerror or err})") from None
        except ValueError as err:  # not JSON, not UTF-8, or an integer of thousands of digits
            raise PruneError(f"manifest {path} is not valid JSON ({err}); was it truncated or written by another tool?") from None
        except RecursionError:
            raise PruneError(f"manifest {path} is invalid: values are nested too deeply to read; "
                             "was it written by another tool?") from None
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
                      class_counts: list[int] | None = None, files_fingerprint: str | None = None,
                      can_force: bool = True) -> str | None:
        """Refuse data other than the manifest was made for; return a warning when forced.

        With the data's ``class_counts`` (examples per class) and a manifest that records
        them, a fingerprint mismatch is told apart: same counts means the order differs.
        ``files_fingerprint`` (a ``folder:`` source's file list) is compared when both have one.
        ``can_force=False``: the caller has no ``--force``, so the error does not suggest one.
        """
        mine = self.dataset
        problem = dataset_mismatch(mine, fingerprint=fingerprint, num_examples=num_examples, class_counts=class_counts,
                                   files_fingerprint=files_fingerprint)
        if problem is None:
            return None
        message = f"manifest was made for {mine['source']!r} but the data given does not match: {problem}"
        beyond = self.beyond(num_examples)
        if force and beyond:
            raise PruneError(f"{message}; {beyond} of its indices and flipped labels lie beyond the {num_examples} "
                             "examples given, so not even --force can use it")
        if force:
            return message + " (continuing because of --force)"
        raise PruneError(message + "; pass the dataset the manifest was made from" + (", or --force" if can_force else ""))

    def beyond(self, num_examples: int) -> int:
        """How many indices (and recorded label flips) lie outside data of ``num_examples`` examples."""
        flipped = (self.label_noise or {}).get("flipped", [])
        return int((self.indices >= num_examples).sum()) + sum(1 for i in flipped if i >= num_examples)

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

    def subset(self, dataset, *, labels=None, force: bool = False):
        """The selected examples of a map-style PyTorch dataset, checked first.

        Checks the dataset's size and label fingerprint as ``apply`` does (labels: ``labels`` if
        given, else the dataset's ``targets``, a ``TensorDataset``'s second tensor, or
        ``dataset[i][1]``) and raises ``PruneError`` on a mismatch (``force=True`` warns).
        Returns ``torch.utils.data.Subset(dataset, indices)``.
        """
        from prune.data.torch_subset import checked_torch_subset

        return checked_torch_subset(self, dataset, labels=labels, force=force)

    def sampler(self, num_replicas: int | None = None, rank: int | None = None, *, shuffle: bool = True,
                seed: int = 0, weighted: bool = False):
        """A sampler of the manifest's indices into the whole dataset, each rank its share per epoch (as
        ``DistributedSampler``; ``prune.data.torch_subset.ManifestSampler``)::

            sampler = m.sampler(num_replicas=world_size, rank=rank, seed=0)
            loader = DataLoader(train_set, batch_size=128, sampler=sampler)   # sampler.set_epoch(e) each epoch
        """
        from prune.data.torch_subset import ManifestSampler

        return ManifestSampler(self, num_replicas, rank, shuffle=shuffle, seed=seed, weighted=weighted)

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
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", str(record["fingerprint"])):
        return (f"the {what}'s label fingerprint {str(record['fingerprint'])[:80]!r} is damaged (prune writes "
                f"sha256:<64 hex digits>), so the data cannot be checked against it; re-create the {what}")
    recorded = record.get("class_counts")
    if recorded is None or class_counts is None:
        return "labels or their order differ (label fingerprints do not match)"
    if _trimmed(recorded) == _trimmed(class_counts):
        return ("order differs: the data hold the same labels (the same count per class) in a different "
                f"order, so the {what}'s indices would pick other examples (was it shuffled or sorted? if not, "
                f"the {what}'s fingerprint was changed)")
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
