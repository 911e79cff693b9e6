"""What selection starts from: the candidates (labels, provenance, a feature store) and the checks on a request."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prune import random_streams
from prune.errors import PruneError
from prune.features.store import FeatureStore
from prune.selection.budget import Budget
from prune.selection.difficulty import Difficulty, DifficultyConfig
from prune.selection.methods import MethodConfig


@dataclass
class Candidates:
    """The training split as selection sees it: labels used, provenance, optional features."""

    labels: torch.Tensor
    dataset: dict            # source, split, num_examples, num_classes, fingerprint (+ root)
    label_noise: dict | None = None
    model: dict | None = None
    store: FeatureStore | None = None

    @classmethod
    def from_store(cls, store: FeatureStore, root: str | None = None) -> "Candidates":
        meta = store.meta
        noise = meta.get("label_noise")
        if noise:
            flipped = store.noise_flipped.numpy()
            noise = {**noise, "flipped": flipped.tolist(), "noisy_labels": store.labels.numpy()[flipped].tolist()}
        dataset = dict(meta["dataset"])  # split, class counts, hf columns
        if root:
            dataset["root"] = root
        return cls(store.labels, dataset, noise, {"features": meta["features"], "feature_seed": meta["seed"]}, store)


def difficulty_stage(candidates: Candidates, method: MethodConfig, difficulty: DifficultyConfig) -> Difficulty | None:
    """The difficulty stage over the candidates' store (None when it is off)."""
    if not difficulty.active:
        return None
    if candidates.store is None:
        raise PruneError(f"method {method.name} with --drop-hard {difficulty.drop_hard} --strata {difficulty.strata} "
                         "needs features; pass --features, let prune select compute them, or use --drop-hard 0 --strata 1",
                         parameters=True)
    return Difficulty(candidates.store, difficulty)


def rows_per_class(candidates: Candidates) -> list[torch.Tensor]:
    """Each class's rows, ascending: one stable sort of the labels (not one pass per class)."""
    labels = candidates.labels
    counts = torch.bincount(labels, minlength=candidates.dataset["num_classes"])
    return list(torch.argsort(labels, stable=True).split(counts.tolist()))


def random_subset(labels: torch.Tensor, per_class: list[int], seed: int) -> torch.Tensor:
    """Sorted indices of a uniform sample of ``per_class[c]`` examples of each class c (the random baseline)."""
    generator = random_streams.generator(seed, "selection")
    picks = [rows[torch.randperm(len(rows), generator=generator)[:k]]
             for rows, k in zip((torch.nonzero(labels == c).flatten() for c in range(len(per_class))), per_class)]
    return torch.sort(torch.cat(picks)).values if picks else torch.empty(0, dtype=torch.int64)


def check_request(labels: torch.Tensor, num_classes: int, method: MethodConfig, budget: Budget,
                  posterior_samples: int | None = None, checkpoints: int | None = None) -> None:
    """Every check of a selection that needs only the labels, so it fails before any model runs.

    ``posterior_samples`` (M) and ``checkpoints`` (T, the warm-up epochs) describe the features still
    to be computed (None: given by a store, which the method checks when it opens it).
    """
    budget.per_class(torch.bincount(labels, minlength=num_classes).tolist())
    if posterior_samples is not None:
        method.check_samples(posterior_samples)
    if checkpoints is not None:
        method.check_checkpoints(checkpoints)
