"""The one protocol every selection method follows, and what the distance methods share.

A method (``Method``) turns one part of a class (its rows after the difficulty stage, with a
budget) into pools (``pools``: drawn from the selection stream, in class order, so the plan is
reproducible), then picks from each pool (``select_pools``: a ``PoolResult`` of positions, weights
gamma and an objective). Its class attributes are its defaults: the difficulty stage it runs
through (``default_difficulty``) and the features its distance uses (``default_posterior``).
``SamplingMethod`` picks uniformly; ``DistanceMethod`` runs a greedy over a distance each
subclass defines (``distances``): facility location (``prune.selection.engine``), or kernel
herding for ``herding`` (``prune.selection.matching``); ``FieldMethod`` runs one of the field's
published rules (``prune.selection.field``) on each pool (``pick``). ``posterior`` says which
features the distance is computed from: those at the unperturbed warm weights (``"point"``) or every
posterior sample's, the distance then averaged over the M samples (``"mean"``); ``posteriors``
lists the choices a method accepts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from prune.errors import PruneError
from prune.features.store import POSTERIORS, FeatureStore
from prune.selection.budget import largest_remainder
from prune.selection.difficulty import DifficultyConfig
from prune.selection.engine import facility_location, split_pool
from prune.selection.field.ranking import KEEPS
from prune.selection.methods.distances import peak_bytes

#: lcmat: where the top-K curvature coordinates are chosen: over the whole training set, or per class
TOP_K_SCOPES = ("all", "class")
#: the largest whole-number knob (pool, subset and Hessian batch sizes, K, a window): int32's, beyond any data set's size
COUNT_MAX = 2**31 - 1
#: the largest lcmat --rho: with features at most ``MAX_FEATURE`` (1e6) in magnitude, its float32 distances then
#: stay far below float32's largest number (3.4e38), and it is far above any useful weight (the default is 0.05)
RHO_MAX = 1e6
#: the messages name the options' flags; a Python caller reads the parameters' names (``prune.errors.PruneError``):
#: the method's own (``rho``), and where a selection's features are checked, the settings of the other configs
FEATURE_PARAMETERS = {"--posterior-samples": "PosteriorConfig.samples", "--warmup-epochs": "WarmupConfig.epochs",
                      "--posterior": "MethodConfig.posterior"}


@dataclass(frozen=True)
class MethodConfig:
    """A method (``name``) and the knobs of all methods; each method records the ones it uses in the manifest."""

    name: str = "herding"
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
    difficulty: DifficultyConfig | None = None  # the difficulty stage; None: the method's default
    keep: str | None = None  # score methods: "easy" or "hard" end of the ranking; None: the method's default

    def __post_init__(self):
        for flag, value, low in (("--max-pool", self.max_pool, 1), ("--top-k", self.top_k, 1),
                                 ("--subset-size", self.subset_size, 1), ("--learned-window", self.learned_window, 0),
                                 ("--hessian-batch", self.hessian_batch, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PruneError(f"{flag} must be a whole number >= {low}, got {value!r}", parameters=True)
            if value > COUNT_MAX:
                raise PruneError(f"{flag} must be at most {COUNT_MAX}, got {value!r}", parameters=True)
        for flag, value in (("--rho", self.rho), ("--damping", self.damping)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise PruneError(f"{flag} must be a finite number >= 0, got {value!r}", parameters=True)
        if self.rho > RHO_MAX:
            raise PruneError(f"--rho must be at most {RHO_MAX:g} (larger weights can overflow lcmat's float32 "
                             f"distances), got {self.rho!r}", parameters=True)
        if self.posterior is not None and self.posterior not in POSTERIORS:
            raise PruneError(f"unknown --posterior {self.posterior!r}; choose point or mean", parameters=True)
        if not isinstance(self.learned_loss, (int, float)) or math.isnan(self.learned_loss):
            raise PruneError(f"--learned-loss must be a number, got {self.learned_loss!r}", parameters=True)
        method = self.method  # an unknown name is refused here, once
        if self.posterior is not None and not method.needs_features:
            raise PruneError(f"--posterior chooses the features a distance is computed from; {self.name} computes none",
                             parameters=True)
        if self.posterior is not None and self.posterior not in method.posteriors:
            reads = "the unperturbed warm weights' features only" if method.posteriors else "the warm-up's checkpoints"
            raise PruneError(f"--posterior {self.posterior}: {self.name} reads {reads}; leave out --posterior",
                             parameters=True)
        if self.top_k_scope not in TOP_K_SCOPES:
            raise PruneError(f"unknown --top-k-scope {self.top_k_scope!r}; choose all or class", parameters=True)
        if self.keep is not None and self.keep not in KEEPS:
            raise PruneError(f"unknown --keep {self.keep!r}; choose easy or hard", parameters=True)
        if self.keep is not None and method.default_keep is None:
            raise PruneError(f"--keep chooses the end of a score's ranking that a score method keeps; {self.name} "
                             "ranks by no score: leave out --keep", parameters=True)

    @property
    def method(self) -> type[Method]:
        """The method's class; an unknown ``name`` is a ``PruneError`` (``prune.selection.methods.registry``)."""
        from prune.selection.methods.registry import method_class  # the registry imports this module

        return method_class(self.name)

    def stage(self) -> DifficultyConfig:
        """The difficulty stage this selection runs through: ``difficulty``, else the method's default."""
        return self.difficulty or self.method.default_difficulty

    def averages_posterior(self) -> bool:
        """Whether the method, with this ``posterior``, needs the M posterior samples."""
        return self.method.needs_features and (self.posterior or self.method.default_posterior) == "mean"

    def check_samples(self, samples: int) -> None:
        """Refuse features of M = ``samples`` posterior samples where the method averages over them and M < 2."""
        if self.averages_posterior() and samples < 2:
            other = " (or --posterior point)" if self.name != "ensemble" else ""
            raise PruneError(f"method {self.name} needs posterior samples, got --posterior-samples {samples}; "
                             f"add --posterior-samples 4{other}", parameters=FEATURE_PARAMETERS)

    def check_checkpoints(self, checkpoints: int) -> None:
        """Refuse a warm-up of ``checkpoints`` epochs (T) where the method reads more (``Method.min_checkpoints``)."""
        needed = self.method.min_checkpoints
        if checkpoints < needed:
            raise PruneError(f"method {self.name} reads {needed} or more warm-up checkpoints (one per warm-up epoch), "
                             f"got T = {checkpoints}; use --warmup-epochs {needed} or more (for a store: re-create it)",
                             parameters=FEATURE_PARAMETERS)


@dataclass
class PoolResult:
    positions: torch.Tensor  # dataset indices chosen from this pool
    weights: torch.Tensor    # gamma of each
    objective: float


class Method:
    """What ``prune.selection.select`` asks of every method; see the module docstring."""

    name = ""
    needs_features = True  # reads a feature store (a sampling method needs one only for its difficulty stage)
    default_posterior: str | None = "point"
    posteriors: tuple[str, ...] = POSTERIORS  # the --posterior choices it accepts
    #: the stage the method runs through unless told otherwise (every facility-location method's)
    default_difficulty = DifficultyConfig(strata="auto", strata_budget="proportional")
    default_keep: str | None = None  # score methods: the end of the ranking kept without --keep
    split = 0  # parts larger than max_pool that ``pools`` split
    min_checkpoints = 1  # warm-up checkpoints (epochs, T) the method reads at least

    def __init__(self, store: FeatureStore | None, options: MethodConfig, device: torch.device):
        if store is None and self.needs_features:
            raise PruneError(f"method {self.name} needs features; pass --features or let prune select compute them",
                             parameters=True)
        self.store, self.options, self.device = store, options, device

    @classmethod
    def difficulty(cls, **given) -> DifficultyConfig:
        """The method's default stage with the options ``given`` (None: keep the default) in their place."""
        return dataclasses.replace(cls.default_difficulty, **{k: v for k, v in given.items() if v is not None})

    def pools(self, rows: torch.Tensor, k: int, generator: torch.Generator) -> list[tuple[torch.Tensor, int]]:
        """One part's (pool, budget) list, drawing from ``generator``."""
        raise NotImplementedError

    def cutoff(self, k: int, n: int) -> float:
        """The share of a class of n examples with budget k whose hardest the difficulty stage also drops
        (CCS's hard cut-off β, ``Ccs``); 0 for every other method."""
        return 0.0

    def select_pools(self, rows: torch.Tensor, pools: list[tuple[torch.Tensor, int]],
                     done=lambda: None) -> list[PoolResult]:
        """The picks in each (pool, budget) that ``pools`` formed from ``rows``; ``done()`` after each pool."""
        raise NotImplementedError

    def record(self) -> dict:
        """The manifest's ``method.params`` (the difficulty stage's are added by ``select``)."""
        return {}

    def selection_record(self, pools: int, objective: float) -> dict:
        """The manifest's ``selection`` facts of ``pools`` greedy runs with summed ``objective``."""
        return {}


class SamplingMethod(Method):
    """Uniform picks within each part (after the difficulty stage); gamma = part size / budget."""

    needs_features = False
    default_posterior = None
    posteriors = ()

    def pools(self, rows, k, generator):
        return [(rows[torch.randperm(len(rows), generator=generator)], k)]  # in the order picks are taken

    def select_pools(self, rows, pools, done=lambda: None):
        results = []
        for pool, budget in pools:
            weights = torch.full((budget,), len(pool) / budget if budget else 0.0, dtype=torch.float64)
            results.append(PoolResult(pool[:budget], weights, 0.0))
            done()
        return results


class DistanceMethod(Method):
    """Class-balanced greedy selection over pools of at most ``max_pool`` examples."""

    #: the manifest's ``selection.similarity``: what the greedy's ``objective`` (summed over pools) is made of
    similarity = "D - d, D the largest distance in each pool"

    def __init__(self, store: FeatureStore | None, options: MethodConfig, device: torch.device):
        super().__init__(store, options, device)
        self.split = 0
        self.posterior = options.posterior or self.default_posterior
        if options.posterior is None and self.posterior == "mean" and store.posterior_samples < 2:
            raise PruneError(f"{self.name} averages over posterior samples by default, but {store.path} has M = 1; "
                             "create the store with `prune features --posterior-samples 4`, or pass --posterior point",
                             parameters={**FEATURE_PARAMETERS, "--posterior-samples": "--posterior-samples"})
        if self.posterior == "mean":
            store.posterior_features("mean")  # refuses a store without posterior samples

    def params(self) -> dict:
        """The method's own knobs, as recorded."""
        return {"max_pool": self.options.max_pool}

    def record(self) -> dict:
        return {**self.params(), "posterior": self.posterior, "posterior_samples": self.store.posterior_samples}

    def selection_record(self, pools: int, objective: float) -> dict:
        # F to 7 significant digits, float32's: the distances are float32, and the digits beyond
        # change with torch's thread count (the manifest is the same, byte for byte, either way)
        return {"pools": pools, "objective": float(f"{objective:.7g}"), "similarity": self.similarity}

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

    def select_pools(self, rows: torch.Tensor, pools: list[tuple[torch.Tensor, int]],
                     done=lambda: None) -> list[PoolResult]:
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


class FieldMethod(Method):
    """One of the field's published rules (``prune.selection.field``) per pool: ``pick`` gives the pool
    positions it keeps, in its order. Each pick stands for p / k examples of its pool (gamma), as in
    a uniform sample: these rules define no weights. Pools are whole parts (no ``--max-pool`` split:
    every rule here is linear in memory); ``pools`` may form several (CCS's strata, in ``d2``).

    As published, none runs through prune's difficulty stage by default (``drop_hard=0``, as
    ``random``), so a comparison is against the method as its authors define it; the stage's options
    still turn it on. ``record`` lists what each reads (``params``) and, for a score, the end kept.
    """

    default_difficulty = DifficultyConfig(drop_hard=0)
    default_posterior: str | None = None  # the methods that read the final features set "point"
    posteriors: tuple[str, ...] = ()
    #: what the method reads from the store, as recorded (``source`` in the manifest's params)
    source = ""

    def __init__(self, store: FeatureStore | None, options: MethodConfig, device: torch.device):
        super().__init__(store, options, device)
        self.posterior = options.posterior or self.default_posterior
        if self.posterior == "mean":
            store.posterior_features("mean")  # refuses a store without posterior samples
        self.keep = options.keep or self.default_keep

    def pools(self, rows: torch.Tensor, k: int, generator: torch.Generator) -> list[tuple[torch.Tensor, int]]:
        return [(rows, k)]

    def pick(self, pool: torch.Tensor, k: int) -> torch.Tensor:
        """int64 positions in ``pool`` (dataset indices) of the k examples kept, in the order chosen."""
        raise NotImplementedError

    def select_pools(self, rows, pools, done=lambda: None):
        results = []
        for pool, budget in pools:
            if budget == 0:
                continue
            chosen = pool[self.pick(pool, budget)]
            results.append(PoolResult(chosen, torch.full((len(chosen),), len(pool) / len(chosen), dtype=torch.float64), 0.0))
            done()
        return results

    def params(self) -> dict:
        """The method's own knobs, as recorded."""
        return {}

    def record(self) -> dict:
        record = {"source": self.source, **self.params()}
        if self.posterior is not None:
            record.update(posterior=self.posterior, posterior_samples=self.store.posterior_samples)
        if self.keep is not None:
            record["keep"] = self.keep
        return record
