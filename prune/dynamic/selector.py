"""One selection point: P random subsets V_p, a mini-batch coreset greedily selected from each.

Class-balanced within V_p; ``ensemble`` on the expected distance of logit gradients over M
posterior samples, ``crest`` at the current weights, ``random`` uniformly (``prune.dynamic.loop``
describes the whole algorithm). ``ensemble`` and ``crest`` first run the difficulty stage
(``prune.selection.difficulty``) inside each class of V_p, scored by the current model's
posterior samples: with ``drop_hard="auto"`` the examples whose label the posterior mean
believes less than a uniform guess (p̄_y < 1/C) are left out of that coreset (never below its
budget).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from prune import features
from prune import random_streams
from prune.dynamic.config import DynamicConfig
from prune.selection import class_budgets, facility_location
from prune.selection.difficulty import below_chance, hard_examples, parse_drop_hard, scores_from_gradients
from prune.selection.methods.distances import expected_euclidean
from prune.training import console


@dataclass
class Coreset:
    indices: torch.Tensor  # int64 dataset indices (selection order)
    weights: torch.Tensor  # float64 gamma


class _Subsets:
    """Random subsets of size r from the candidates: chunks of one permutation, a new one when used up
    or when the candidates change (compared element by element: pools of equal length and sum differ too)."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator
        self.perm: torch.Tensor | None = None
        self.pos = 0
        self.pool: torch.Tensor | None = None

    def draw(self, pool: torch.Tensor, r: int) -> torch.Tensor:
        if self.perm is None or not torch.equal(self.pool, pool) or self.pos + r > len(self.perm):
            self.perm = pool[torch.randperm(len(pool), generator=self.generator)]
            self.pos, self.pool = 0, pool.clone()
        part = self.perm[self.pos:self.pos + r]
        self.pos += r
        return part


def _class_split(labels: torch.Tensor, m: int, num_classes: int, balanced: bool) -> list[tuple[torch.Tensor, int]]:
    """(positions in V_p, budget) per greedy run: one per class of V_p (balanced) or one for V_p."""
    if not balanced:
        return [(torch.arange(len(labels)), m)]
    rows = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    budgets = class_budgets([len(r) for r in rows], count=m)
    return [(r, k) for r, k in zip(rows, budgets) if k > 0]


@contextlib.contextmanager
def _one_thread():
    """Run a block on one CPU thread, restoring the count afterwards (see prune.selection.engine._cpu_threads)."""
    prev = torch.get_num_threads()
    if prev != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if prev != 1:
            torch.set_num_threads(prev)


class Selector:
    """Selects the P mini-batch coresets of one selection point on the current model."""

    def __init__(self, cfg: DynamicConfig, x: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int,
                 device: torch.device):
        self.cfg, self.x, self.labels, self.num_classes = cfg, x, labels, num_classes
        self.seed, self.device = seed, device
        self.subsets = _Subsets(random_streams.generator(seed, "dynamic_subsets"))
        self.random = random_streams.generator(seed, "dynamic_subsets", 1)
        self.low_streak = torch.zeros(len(labels), dtype=torch.int64)  # consecutive selections with loss < alpha
        self.forward_examples = 0
        self.dropped_hard = 0
        self.points = 0
        self.layers_used: str | None = None

    def candidates(self) -> torch.Tensor:
        n, r = len(self.labels), min(self.cfg.subset_size, len(self.labels))
        if self.cfg.learned_loss > 0:
            keep = torch.nonzero(self.low_streak < self.cfg.learned_window).flatten()
            if len(keep) >= r:
                return keep
        return torch.arange(n)

    def _gradients(self, model: nn.Module, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(rows), M, C) logit gradients and (len(rows),) mean losses at w (+ delta_m)."""
        cfg, samples = self.cfg, self.cfg.samples
        grads = torch.empty(len(rows), samples, self.num_classes)
        loss = torch.zeros(len(rows))
        if samples > 1:
            params, used = features.posterior_parameters(model, cfg.posterior_layers)
            if self.layers_used is None and used != cfg.posterior_layers:
                console.print(f"[yellow]note:[/] the model has no {cfg.posterior_layers} layers to perturb; "
                              f"perturbing {used} instead", highlight=False)
            self.layers_used = used
        for m in range(samples):
            if samples > 1:
                generator = random_streams.generator(self.seed, "dynamic_perturbation", self.points, m)
                context = features.perturbed(model, params, cfg.posterior_sigma, generator)
            else:
                context = contextlib.nullcontext()
            with context:
                start = 0
                for batch in features.extract_batches(model, self.x[rows], self.labels[rows],
                                                      batch_size=cfg.feature_batch_size, device=self.device):
                    b = len(batch["loss"])
                    grads[start:start + b, m] = batch["grad_logit"]
                    loss[start:start + b] += batch["loss"] / samples
                    start += b
            self.forward_examples += len(rows)
        return grads, loss

    def select(self, model: nn.Module, count: int, done=lambda: None) -> tuple[list[Coreset], dict]:
        """``count`` coresets of size m from ``count`` fresh random subsets; ``done()`` after each one."""
        cfg = self.cfg
        pool = self.candidates()
        r = min(cfg.subset_size, len(pool))
        m = min(cfg.batch_size, r)
        subsets = [self.subsets.draw(pool, r) for _ in range(count)]
        coresets, objective = [], 0.0
        if cfg.kind == "random":
            for v in subsets:
                chosen, weights = [], []
                for rows, k in _class_split(self.labels[v], m, self.num_classes, cfg.class_balanced):
                    pick = rows[torch.randperm(len(rows), generator=self.random)[:k]]
                    chosen.append(v[pick])
                    weights.append(torch.full((k,), len(rows) / k, dtype=torch.float64))
                coresets.append(Coreset(torch.cat(chosen), torch.cat(weights)))
                done()
        else:
            rows_all = torch.cat(subsets)
            grads, loss = self._gradients(model, rows_all)
            if cfg.learned_loss > 0:
                low = loss < cfg.learned_loss
                self.low_streak[rows_all] = torch.where(low, self.low_streak[rows_all] + 1, torch.zeros_like(low, dtype=torch.int64))
            drop_hard = parse_drop_hard(cfg.drop_hard)
            if drop_hard != 0:
                unlikely = below_chance(grads, self.labels[rows_all])
                score = scores_from_gradients(grads, self.labels[rows_all], "el2n")  # the static stage's default
            offset = 0
            with _one_thread():  # many tiny greedy runs: no thread-pool switch per call (engine.CPU_THREADS)
                for v in subsets:
                    g = grads[offset:offset + len(v)]
                    chosen, weights = [], []
                    for rows, k in _class_split(self.labels[v], m, self.num_classes, cfg.class_balanced):
                        if drop_hard != 0:
                            at = offset + rows
                            hard = hard_examples(drop_hard, score[at], unlikely[at], k)
                            self.dropped_hard += int(hard.sum())
                            rows = rows[~hard]
                        distances = expected_euclidean(g[rows]).to(self.device, torch.float32)
                        result = facility_location(distances, k)
                        chosen.append(v[rows[result.order.cpu()]])
                        weights.append(result.weights.cpu().double())
                        objective += result.objective
                    coresets.append(Coreset(torch.cat(chosen), torch.cat(weights)))
                    offset += len(v)
                    done()
        self.points += 1
        info = {"subsets": count, "subset_size": r, "objective": objective,
                "candidates": len(pool)}
        return coresets, info
