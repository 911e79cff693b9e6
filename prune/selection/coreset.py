"""From candidates (labels, and a feature store for distance methods) to a manifest."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prune.errors import PruneError
from prune.features.store import FeatureStore
from prune.manifest import Manifest
from prune.selection.budget import class_budgets
from prune.selection.methods import FACILITY_LOCATION, METHODS, MethodOptions
from prune.training import console


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
        if "dataset" in meta:  # stores record it whole (split, class counts, hf columns)
            dataset = dict(meta["dataset"])
        else:  # stores written before that
            dataset = {"source": meta["dataset_source"], "split": "train", "num_examples": store.num_examples,
                       "num_classes": store.num_classes, "fingerprint": meta["fingerprint"]}
        if root:
            dataset["root"] = root
        return cls(store.labels, dataset, noise, {"features": meta["features"], "feature_seed": meta["seed"]}, store)


def select(candidates: Candidates, method: str, *, fraction: float | None = None, count: int | None = None,
           balance: str = "proportional", seed: int = 0, options: MethodOptions = MethodOptions(),
           device: torch.device = torch.device("cpu")) -> Manifest:
    """Select a class-balanced coreset; distance methods read the feature store only."""
    if method not in METHODS:
        raise PruneError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    labels, num_classes = candidates.labels, candidates.dataset["num_classes"]
    class_rows = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    budgets = class_budgets([len(r) for r in class_rows], fraction=fraction, count=count, balance=balance)
    generator = torch.Generator().manual_seed(seed)

    chosen, weights, selection = [], [], {}
    if method == "random":
        params = {}
        for rows, k in zip(class_rows, budgets):
            chosen.append(rows[torch.randperm(len(rows), generator=generator)[:k]])
            weights.append(torch.full((k,), len(rows) / k if k else 0.0, dtype=torch.float64))
    else:
        if candidates.store is None:
            raise PruneError(f"method {method} needs features; pass --features or let prune select compute them")
        engine = FACILITY_LOCATION[method](candidates.store, options, device)
        objective, pools = 0.0, 0
        for rows, k in zip(class_rows, budgets):
            for result in engine.select_class(rows, k, generator):
                chosen.append(result.positions)
                weights.append(result.weights)
                objective += result.objective
                pools += 1
        params = {**engine.params(), "posterior_samples": candidates.store.posterior_samples}
        selection = {"pools": pools, "objective": objective, "similarity": "D - d, D the largest distance in each pool"}
        if pools > sum(1 for k in budgets if k):
            console.print(f"[yellow]note:[/] classes larger than the pool limit were split: {pools} pools in all")
        if getattr(engine, "dropped", 0):
            selection["dropped_learned"] = engine.dropped

    indices = torch.cat(chosen)
    order = torch.argsort(indices)
    return Manifest(
        indices=indices[order].numpy(),
        weights=torch.cat(weights)[order].numpy(),
        dataset=candidates.dataset,
        method={"name": method, "params": params},
        budget={"fraction": fraction, "count": int(sum(budgets)), "balance": balance},
        per_class=[int(k) for k in budgets],
        seed=seed,
        label_noise=candidates.label_noise,
        model=candidates.model,
        selection=selection,
    )
