"""From candidates (labels, and a feature store for distance methods) to a manifest, through the difficulty stage."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prune import distributed, random_streams
from prune.errors import PruneError
from prune.features.store import FeatureStore
from prune.manifest import Manifest
from prune.selection.budget import class_budgets
from prune.selection.difficulty import Difficulty, DifficultyOptions
from prune.selection.methods import DISTANCE_METHODS, METHODS, SAMPLING, TOP_K_SCOPES, MethodOptions, averages_posterior
from prune.training import console, progress


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


def default_difficulty(method: str, drop_hard: str | float | None = None, strata: int | str | None = None,
                       score: str | None = None, strata_budget: str | None = None) -> DifficultyOptions:
    """The stage ``method`` runs with, with the options given replacing its defaults (None: keep).

    ``random`` is the plain baseline (no stage); ``clean`` is uniform sampling after dropping
    the examples whose label the warm model's posterior believes less than chance (``auto``);
    ``ccs`` samples across 10 equal-width difficulty strata with equal budgets after the same
    dropping (coverage-centric selection); ``herding`` drops (``auto``) and needs no strata,
    since it keeps the class's distribution itself; every facility-location method drops (``auto``),
    which keeps it from spending the budget on mislabelled examples, and, where a class's budget
    is small, runs within 5 difficulty quantiles with proportional budgets, which keeps it from
    spending that budget on the sparse hard examples (``strata="auto"``, docs/results.md).
    """
    default = {"random": DifficultyOptions(drop_hard=0), "clean": DifficultyOptions(), "herding": DifficultyOptions(),
               "ccs": DifficultyOptions(strata=10)}.get(
        method, DifficultyOptions(strata="auto", strata_budget="proportional"))
    return DifficultyOptions(drop_hard=default.drop_hard if drop_hard is None else drop_hard,
                             strata=default.strata if strata is None else strata,
                             score=default.score if score is None else score,
                             strata_budget=default.strata_budget if strata_budget is None else strata_budget)


def difficulty_stage(candidates: Candidates, method: str, difficulty: DifficultyOptions | None) -> Difficulty | None:
    difficulty = difficulty or default_difficulty(method)
    if not difficulty.active:
        return None
    if candidates.store is None:
        raise PruneError(f"method {method} with --drop-hard {difficulty.drop_hard} --strata {difficulty.strata} needs "
                         "features; pass --features, let prune select compute them, or use --drop-hard 0 --strata 1")
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


def _greedy_runs(engine, method: str, greedy: list, world: distributed.World):
    """Each part's greedy results (a list of ``PoolResult``), in the order of ``greedy``, on rank 0.

    Among several ranks (torchrun) the parts are dealt out by their cost, p^2 summed over their
    pools, each to the rank with the least so far (ties to the lower part, then the lower rank),
    and rank 0 gathers the results; a part's result does not depend on where it ran, so the
    manifest is the one-process manifest. The other ranks get nothing.
    """
    cost = [sum(len(pool) ** 2 for pool, _ in part_pools) for _, _, part_pools in greedy]
    load = [0] * world.size
    mine = []
    for i in sorted(range(len(greedy)), key=lambda i: -cost[i]):
        rank = min(range(world.size), key=lambda r: load[r])
        load[rank] += cost[i]
        if rank == world.rank:
            mine.append(i)
    mine.sort()
    results = {}
    with progress() as bars:  # greedy runs done / planned
        task = bars.add_task(f"greedy {method}", total=sum(len(greedy[i][2]) for i in mine), status="")
        for i in mine:
            c, part, part_pools = greedy[i]
            bars.update(task, status=f"class {c}")
            results[i] = engine.select_pools(part, part_pools, done=lambda: bars.advance(task))
    if world.size > 1:
        console.print(f"rank {world.rank}: {len(mine)} of {len(greedy)} parts' greedy runs", highlight=False)
        gathered = world.gather(results)
        if not world.main:
            return []
        results = {i: result for part in gathered for i, result in part.items()}
    return [results[i] for i in range(len(greedy))]


def check_request(labels: torch.Tensor, num_classes: int, method: str, *, fraction: float | None = None,
                  count: int | None = None, balance: str = "proportional", options: MethodOptions = MethodOptions(),
                  posterior_samples: int | None = None) -> None:
    """Every check of a selection that needs only the labels and the options, so it fails before any model runs.

    ``posterior_samples`` is M of the features still to be computed (None: given by a store).
    """
    if method not in METHODS:
        raise PruneError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    class_budgets(torch.bincount(labels, minlength=num_classes).tolist(), fraction=fraction, count=count,
                  balance=balance)
    if averages_posterior(method, options.posterior) and posterior_samples is not None and posterior_samples < 2:
        other = " (or --posterior point)" if method != "ensemble" else ""
        raise PruneError(f"method {method} needs posterior samples, got --posterior-samples {posterior_samples}; "
                         f"add --posterior-samples 4{other}")
    if method == "lcmat" and options.top_k_scope not in TOP_K_SCOPES:
        raise PruneError(f"unknown --top-k-scope {options.top_k_scope!r}; choose all or class")


def select(candidates: Candidates, method: str, *, fraction: float | None = None, count: int | None = None,
           balance: str = "proportional", seed: int = 0, options: MethodOptions = MethodOptions(),
           difficulty: DifficultyOptions | None = None, device: torch.device = torch.device("cpu")) -> Manifest | None:
    """Select a class-balanced coreset; distance methods read the feature store only.

    Under torchrun (a ``prune.distributed`` process group) every rank calls this, the greedy
    runs are shared out (``_greedy_runs``), and rank 0 returns the manifest; the others get None.

    Each class's budget goes through the difficulty stage first (``difficulty``, by default
    ``default_difficulty(method)``): hard examples dropped, the rest split into strata with
    budgets of their own; the method then selects within each part.
    """
    if method not in METHODS:
        raise PruneError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    if method in SAMPLING and options.posterior is not None:
        raise PruneError(f"--posterior chooses the features a distance is computed from; {method} computes none")
    class_rows = rows_per_class(candidates)
    budgets = class_budgets([len(r) for r in class_rows], fraction=fraction, count=count, balance=balance)
    stage = difficulty_stage(candidates, method, difficulty)
    generator = random_streams.generator(seed, "selection")
    engine = None
    if method not in SAMPLING:
        if candidates.store is None:
            raise PruneError(f"method {method} needs features; pass --features or let prune select compute them")
        engine = DISTANCE_METHODS[method](candidates.store, options, device)

    chosen, weights, selection = [], [], {}
    greedy, learned = [], []  # (class, part, its pools) in the order the generator formed them; crest's drops per class
    for c, (rows, k) in enumerate(zip(class_rows, budgets)):
        before = getattr(engine, "dropped", 0)
        for part, budget in (stage.split(rows, k) if stage else [(rows, k)]):
            if engine is None:  # uniform within the part; gamma = how many each stands for
                chosen.append(part[torch.randperm(len(part), generator=generator)[:budget]])
                weights.append(torch.full((budget,), len(part) / budget if budget else 0.0, dtype=torch.float64))
            else:
                greedy.append((c, part, [(pool, b) for pool, b in engine.pools(part, budget, generator) if b]))
        learned.append(getattr(engine, "dropped", 0) - before)
    params = {}
    world = distributed.current()
    if engine is not None:
        objective, pools = 0.0, sum(len(p) for _, _, p in greedy)
        for results in _greedy_runs(engine, method, greedy, world):
            for result in results:
                chosen.append(result.positions)
                weights.append(result.weights)
                objective += result.objective
        if not world.main:
            return None
        params = {**engine.params(), "posterior": engine.posterior,
                  "posterior_samples": candidates.store.posterior_samples}
        # F to 7 significant digits, float32's: the distances are float32, and the digits beyond
        # change with torch's thread count (the manifest is the same, byte for byte, either way)
        selection = {"pools": pools, "objective": float(f"{objective:.7g}"),
                     "similarity": engine.similarity}
        if engine.split:
            console.print(f"[yellow]note:[/] {engine.split} pools larger than --max-pool {options.max_pool} were "
                          f"split at random: {pools} greedy runs in all", highlight=False)
        if params.get("learned_window"):  # crest: learned examples left out (methods/crest.py)
            selection["dropped_learned"] = learned
            console.print(f"crest: dropped {sum(learned)} examples as learned (loss below {options.learned_loss} at "
                          f"the last {params['learned_window']} warm-up checkpoints; {', '.join(map(str, learned))} "
                          "per class)", highlight=False)
    if stage is not None:
        params["difficulty"] = stage.options.to_dict()
        selection["dropped_hard"] = stage.dropped
        dropped = sum(stage.dropped)
        if dropped:
            console.print(f"difficulty stage: dropped {dropped} examples ({', '.join(map(str, stage.dropped))} "
                          "per class)", highlight=False)

    indices = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.int64)
    order = torch.argsort(indices)
    return Manifest(
        indices=indices[order].numpy(),
        weights=(torch.cat(weights) if weights else torch.empty(0, dtype=torch.float64))[order].numpy(),
        dataset=candidates.dataset,
        method={"name": method, "params": params},
        budget={"fraction": fraction, "count": int(sum(budgets)), "balance": balance},
        per_class=[int(k) for k in budgets],
        seed=seed,
        label_noise=candidates.label_noise,
        model=candidates.model,
        selection=selection,
    )
