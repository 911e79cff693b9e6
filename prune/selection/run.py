"""``select``: build the plan of a selection (``prune.selection.plan``), run it, and write the manifest."""

from __future__ import annotations

import torch

from prune import distributed
from prune.manifest import Manifest
from prune.selection.budget import Budget
from prune.selection.coreset import Candidates
from prune.selection.difficulty import DifficultyConfig
from prune.selection.methods import MethodConfig
from prune.selection.plan import SelectionPlan, plan_selection
from prune.training import console, progress


def select(candidates: Candidates, method: MethodConfig, budget: Budget = Budget(), *, seed: int = 0,
           difficulty: DifficultyConfig | None = None, device: torch.device = torch.device("cpu")) -> Manifest | None:
    """A class-balanced coreset of the candidates: the plan (``plan_selection``), then its greedy runs.

    Each class's budget goes through the difficulty stage first (``difficulty``, None: the method's
    default): hard examples dropped, the rest split into strata with budgets of their own; the
    method then selects within each part. Under torchrun (a ``prune.distributed`` process group)
    every rank calls this, the greedy runs are shared out (``_pool_runs``), and rank 0 returns the
    manifest; the others get None.
    """
    plan = plan_selection(candidates, method, budget, seed=seed, difficulty=difficulty, device=device)
    world = distributed.current()
    results = _pool_runs(plan, world)
    if not world.main:
        return None
    chosen, weights, objective = [], [], 0.0
    for part_results in results:
        for result in part_results:
            chosen.append(result.positions)
            weights.append(result.weights)
            objective += result.objective
    pools = sum(len(part_pools) for _, _, part_pools in plan.parts)
    params, facts = plan.runner.record(), plan.runner.selection_record(pools, objective)
    _notes(plan, method, facts)
    if plan.stage is not None:
        params["difficulty"] = plan.stage.options.to_dict()
        facts["dropped_hard"] = plan.stage.dropped
        if any(plan.stage.cutoffs):  # ccs: the hard cut-off's share and drops, per class
            params["difficulty"]["cutoff"] = plan.stage.cutoffs
            facts["dropped_cutoff"] = plan.stage.cut
    indices = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.int64)
    order = torch.argsort(indices)
    return Manifest(
        indices=indices[order].numpy(),
        weights=(torch.cat(weights) if weights else torch.empty(0, dtype=torch.float64))[order].numpy(),
        dataset=candidates.dataset, method={"name": method.name, "params": params},
        budget=budget.to_dict(int(sum(plan.budgets))), per_class=[int(k) for k in plan.budgets], seed=seed,
        label_noise=candidates.label_noise, model=candidates.model, selection=facts,
    )


def _notes(plan: SelectionPlan, method: MethodConfig, facts: dict) -> None:
    """What the run left out, said once: pools split at random, crest's learned examples, the stage's drops."""
    pools = facts.get("pools", 0)
    if plan.runner.split:
        console.print(f"[yellow]note:[/] {plan.runner.split} pools larger than --max-pool {method.max_pool} were "
                      f"split at random: {pools} greedy runs in all", highlight=False)
    window = plan.runner.record().get("learned_window")
    if window:  # crest: learned examples left out (methods/crest.py)
        facts["dropped_learned"] = plan.learned
        console.print(f"crest: dropped {sum(plan.learned)} examples as learned (loss below {method.learned_loss} at "
                      f"the last {window} warm-up checkpoints; {', '.join(map(str, plan.learned))} per class)",
                      highlight=False)
    dropped = sum(plan.stage.dropped) if plan.stage is not None else 0
    if dropped:
        console.print(f"difficulty stage: dropped {dropped} examples ({', '.join(map(str, plan.stage.dropped))} "
                      "per class)", highlight=False)
    cut = sum(plan.stage.cut) if plan.stage is not None else 0
    if cut:
        console.print(f"hard cut-off: dropped {cut} more of the hardest examples ({', '.join(map(str, plan.stage.cut))} "
                      "per class)", highlight=False)


def _pool_runs(plan: SelectionPlan, world: distributed.World) -> list:
    """Each part's results (a list of ``PoolResult``), in the plan's order, on rank 0.

    Among several ranks (torchrun) the parts are dealt out by their cost, p^2 summed over their
    pools, each to the rank with the least so far (ties to the lower part, then the lower rank),
    and rank 0 gathers the results; a part's result does not depend on where it ran, so the
    manifest is the one-process manifest. The other ranks get nothing.
    """
    parts = plan.parts
    cost = [sum(len(pool) ** 2 for pool, _ in part_pools) for _, _, part_pools in parts]
    load = [0] * world.size
    mine = []
    for i in sorted(range(len(parts)), key=lambda i: -cost[i]):
        rank = min(range(world.size), key=lambda r: load[r])
        load[rank] += cost[i]
        if rank == world.rank:
            mine.append(i)
    mine.sort()
    results = {}
    with progress() as bars:  # pools done / planned
        task = bars.add_task(f"select {plan.method}", total=sum(len(parts[i][2]) for i in mine), status="",
                             unit="pools")
        for i in mine:
            c, part, part_pools = parts[i]
            bars.update(task, status=f"class {c}")
            results[i] = plan.runner.select_pools(part, part_pools, done=lambda: bars.advance(task))
    if world.size > 1:
        console.print(f"rank {world.rank}: {len(mine)} of {len(parts)} parts' greedy runs", highlight=False)
        gathered = world.gather(results)
        if not world.main:
            return []
        results = {i: result for part in gathered for i, result in part.items()}
    return [results[i] for i in range(len(parts))]
