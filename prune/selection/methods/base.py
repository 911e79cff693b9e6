"""What every distance method shares: pools, budgets per pool, the greedy run in each pool.

A method only says which distance it uses (``distances``) and, for CREST, how it forms pools;
the greedy is facility location (``prune.selection.engine``) but for ``herding``, which matches
the pool's distribution instead (``prune.selection.matching``).
``posterior`` says which features the distance is computed from: those at the unperturbed warm
weights (``"point"``, every method's default but herding's and ensemble's) or every posterior
sample's, the distance then averaged over the M samples (``"mean"``; ``ensemble`` is craig with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prune.errors import PruneError
from prune.features.store import POSTERIORS, FeatureStore
from prune.selection.budget import largest_remainder
from prune.selection.engine import facility_location, split_pool
from prune.selection.methods.distances import peak_bytes


@dataclass(frozen=True)
class MethodOptions:
    """Knobs of all methods; each method records the ones it uses in the manifest."""

    max_pool: int = 10_000
    rho: float = 0.05
    top_k: int = 100
    top_k_scope: str = "class"
    damping: float = 1e-3
    hessian_batch: int = 64
    subset_size: int = 500
    learned_loss: float = 0.1
    learned_window: int = 0  # crest: 0 = keep every example (static subsets; see methods/crest.py)
    posterior: str | None = None  # "point" or "mean"; None: the method's default

    def __post_init__(self):
        for flag, value, low in (("--max-pool", self.max_pool, 1), ("--top-k", self.top_k, 1),
                                 ("--subset-size", self.subset_size, 1), ("--learned-window", self.learned_window, 0),
                                 ("--hessian-batch", self.hessian_batch, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PruneError(f"{flag} must be a whole number >= {low}, got {value!r}")
        for flag, value in (("--rho", self.rho), ("--damping", self.damping)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise PruneError(f"{flag} must be a finite number >= 0, got {value!r}")
        if self.posterior is not None and self.posterior not in POSTERIORS:
            raise PruneError(f"unknown --posterior {self.posterior!r}; choose point or mean")
        if not isinstance(self.learned_loss, (int, float)) or math.isnan(self.learned_loss):
            raise PruneError(f"--learned-loss must be a number, got {self.learned_loss!r}")


@dataclass
class PoolResult:
    positions: torch.Tensor  # dataset indices chosen from this pool
    weights: torch.Tensor    # gamma of each
    objective: float


class DistanceMethod:
    """Class-balanced greedy selection over pools of at most ``max_pool`` examples."""

    name = ""
    default_posterior = "point"
    #: the manifest's ``selection.similarity``: what the greedy's ``objective`` (summed over pools) is made of
    similarity = "D - d, D the largest distance in each pool"

    def __init__(self, store: FeatureStore, options: MethodOptions, device: torch.device):
        self.store, self.options, self.device = store, options, device
        self.split = 0  # parts larger than max_pool that ``pools`` split
        self.posterior = options.posterior or self.default_posterior
        if options.posterior is None and self.posterior == "mean" and store.posterior_samples < 2:
            raise PruneError(f"{self.name} averages over posterior samples by default, but {store.path} has M = 1; "
                             "create the store with `prune features --posterior-samples 4`, or pass --posterior point")
        if self.posterior == "mean":
            store.posterior_features("mean")  # refuses a store without posterior samples

    def params(self) -> dict:
        return {"max_pool": self.options.max_pool}

    def distances(self, rows: torch.Tensor) -> torch.Tensor:
        """(p,) dataset indices -> (p, p) distance matrix of that pool."""
        raise NotImplementedError

    @staticmethod
    def peak_bytes(p: int) -> int:
        """Bytes a pool of p holds at its peak: the float32 distances and their blocks' buffers."""
        return peak_bytes(p, 1)

    def pools(self, rows: torch.Tensor, k: int, generator: torch.Generator) -> list[tuple[torch.Tensor, int]]:
        """Split one class into random parts of at most ``max_pool``; budgets proportional to size."""
        parts = split_pool(rows, self.options.max_pool, generator)
        self.split += len(parts) > 1
        return list(zip(parts, largest_remainder([len(p) for p in parts], k)))

    def select_class(self, rows: torch.Tensor, k: int, generator: torch.Generator) -> list[PoolResult]:
        return self.select_pools(rows, self.pools(rows, k, generator))

    def select_pools(self, rows: torch.Tensor, pools: list[tuple[torch.Tensor, int]],
                     done=lambda: None) -> list[PoolResult]:
        """Greedy in each (pool, budget) that ``pools`` formed from ``rows``; ``done()`` after each run."""
        results = []
        for part, budget in pools:
            if budget == 0:
                continue
            order, weights, objective = self.greedy(self.distances(part).to(self.device, torch.float32), budget)
            results.append(PoolResult(part[order.cpu()], weights.cpu().double(), objective))
            done()
        return results

    def greedy(self, distances: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(p, p) float32 distances -> k pool positions in pick order, their weights gamma, the objective."""
        result = facility_location(distances, k)
        return result.order, result.weights, result.objective
