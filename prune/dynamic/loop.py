"""Dynamic coreset training: select mini-batch coresets *during* training (``prune train --dynamic``).

methods.md, "Dynamic selection during training"; seed 001 Algorithm 1 (the posterior "ensemble"
loop) and CREST Algorithm 1. At each selection point, on the current model:

1. draw P random subsets V_1..V_P of size r (``subset_size``) of the training set (disjoint
   within a selection point while the candidates last; examples dropped as learned excluded);
2. select from each a mini-batch coreset S_p of size m (``batch_size``) with the shared greedy
   engine ``prune.selection.facility_location``, *class-balanced within V_p*: V_p's m slots are
   split over its classes in proportion to their counts (``prune.selection.class_budgets``,
   count m) and greedy runs within each class of V_p (``class_balanced=False``: one greedy over
   V_p); weights gamma from the engine (they sum to |V_p|);

   * ``ensemble``: d(i, j) = (1/M) sum_m ||g_i(w + delta_m) - g_j(w + delta_m)||, the expected
     distance over M posterior samples (``prune.selection.methods.distances.expected_euclidean``),
     the perturbations delta_m ~ N(0, sigma^2) of ``posterior_layers`` (BatchNorm affine parameters;
     the last linear layer when the model has none) drawn once per selection point and used for
     every V_p (``prune.features.posterior_parameters`` / ``perturbed``);
   * ``crest``: d(i, j) = ||g_i - g_j|| on logit gradients at the current weights (M = 1);
   * ``random``: a class-balanced uniform sample of m from V_p (the baseline; no features);

3. train: every step back-propagates one coreset S_p (CREST §4.2: a mini-batch coreset is a
   nearly unbiased, low-variance mini-batch), taken in a random order, each coreset once per
   cycle, until the next selection point. A step that must be shorter than m (the last one of an
   epoch) trains on a random part of its coreset.

**Budget.** ``fraction`` f is the fraction of full-data back-propagations (the papers' "10 %
budget"): over the run exactly B = round(f * n * epochs) examples (rounded half up, in exact
arithmetic) are back-propagated. Epoch e gets b_e = floor(e B / E) - floor((e - 1) B / E)
examples (f n each, up to rounding), trained in floor(b_e / m) steps of m and one step of the
remainder (a remainder of 1 after a full step becomes two near-equal steps, so no step trains
on a single example). Forward passes for selection and for the CREST rule are not counted in B;
they are reported (``forward_examples``). The learning rate follows the cosine schedule over the
E epochs, as ``prune train``.

**Update rules.** ``every``: select at the start of epochs 1, 1 + R, 1 + 2R, ... (R = ``every``);
P is the number of steps until the next selection point, so each coreset is trained on once.
``crest`` (CREST eq. 6, 10 and Algorithm 1): select P = b T1 coresets (b =
``coresets_per_check``), then every T1 steps compute

    rho = |F(delta) - L_r(w + delta)| / L_r(w + delta),
    F(delta) = L_r(w) + <g_S, delta> + 1/2 sum lambda_S delta^2,

with delta the change of the last linear layer since the selection, g_S and lambda_S the
gamma-weighted mean last-layer gradient and Hessian diagonal of the coreset union at selection
(closed forms, ``prune.features``: G = g (x) h~, lambda = a (x) h~^2, never built per sample),
and L_r the mean loss on a random sample V_r of r examples drawn at the selection (so F(0) is
exactly L_r(w)). Re-select when rho > tau; then T1 <- max(1, round(h ||H_0|| / ||H_t||))
(h = ``growth``; ||H|| is the norm of the mean last-layer Hessian diagonal on V_r, at the first
selection and now) and P <- b T1. Coresets are reused, cycling in random order, while rho <= tau.
Simplifications against the paper: g_S and lambda_S are those at the selection (CREST smooths them
over time with exponential averages, eq. 8-9), and only the last layer enters F.

**Dropping learned examples** (CREST §4.3, optional): with ``learned_loss`` alpha > 0, an example
whose loss (computed anyway for the subsets V_p it is drawn into) was below alpha at each of its
last ``learned_window`` (T2) selections is no longer drawn into subsets. If fewer than r
candidates would remain, nothing is dropped at that point. ``ensemble`` uses the loss averaged
over its posterior samples; ``random`` computes no losses, so it never drops.

Every random stream (subsets, perturbations, batch order, short-step parts, V_r) comes from its
own generator seeded from ``seed``; the run writes a subset log (``prune.dynamic.subset_log``)
from which ``replay`` (``prune.dynamic.trainer``) trains on exactly the same batches in the same
order.

The loop is here (``run_dynamic``); its parts are their own modules: ``config`` (the knobs),
``budget`` (B and the step sizes), ``selector`` (steps 1 and 2), ``quadratic`` (the crest rule's
F) and ``trainer`` (step 3).
"""

from __future__ import annotations

import time

import torch

from prune import __version__
from prune.dynamic.budget import plan_budget
from prune import random_streams
from prune.dynamic.config import DynamicConfig
from prune.dynamic.quadratic import Quadratic
from prune.dynamic.selector import Coreset, Selector
from prune.dynamic.trainer import DynamicResult, sgd_trainer, train_batch
from prune.errors import PruneError
from prune.manifest import creation_time
from prune.models import build_model
from prune.training import progress, seed_everything, test_split


def _tolist(t: torch.Tensor) -> list:
    return [int(v) for v in t.tolist()]


def _weights_list(t: torch.Tensor) -> list:
    return [int(v) if float(v).is_integer() else float(v) for v in t.tolist()]


def run_dynamic(data, cfg: DynamicConfig, *, model_name: str, seed: int, device: torch.device,
                dataset_record: dict | None = None, labels: torch.Tensor | None = None,
                description: str = "dynamic") -> DynamicResult:
    """Train a fresh model on coresets selected during training; returns the model, log and metrics."""
    creation_time()  # a malformed SOURCE_DATE_EPOCH fails now, not after training
    labels = data.train.y if labels is None else labels
    run = _Run(data, cfg, labels, model_name, seed, device)
    start_time = time.perf_counter()
    run.train(description)
    wall = time.perf_counter() - start_time
    if run.trainer.backprops != run.budget.backprops:  # the invariant the budget rule promises
        raise AssertionError(f"back-propagated {run.trainer.backprops} examples, planned {run.budget.backprops}")
    test = test_split(run.model, data, device)
    log = run.log(dataset_record or data.record(), _label_noise(data.train.y, labels), test)
    timings = {"selection_seconds": sum(run.selection_seconds), "wall_seconds": wall,
               "selection_point_seconds": run.selection_seconds}
    return DynamicResult(run.model, log, run.history, run.trainer.backprops, test, timings)


class _Run:
    """One dynamic run's model, trainer and selector, and the state the loop carries between steps:
    the latest selection point (its coresets, their order of use), the crest rule's quadratic, T1 and
    the steps since its last check, and what the log records."""

    def __init__(self, data, cfg: DynamicConfig, labels: torch.Tensor, model_name: str, seed: int,
                 device: torch.device):
        self.cfg, self.x, self.labels, self.device = cfg, data.train.x, labels, device
        self.model_name, self.seed = model_name, seed
        self.n = len(labels)
        self.budget = plan_budget(cfg.fraction, self.n, cfg.epochs, cfg.batch_size)
        seed_everything(seed)
        self.model = build_model(model_name, data.input_shape, data.num_classes).to(device)
        self.trainer = sgd_trainer(self.model, cfg.to_dict(), cfg.epochs, device, seed)
        if self.trainer.has_batchnorm and any(1 in sizes for sizes in self.budget.epoch_sizes):
            raise PruneError(f"--fraction {cfg.fraction} leaves a step of one example, which cannot train a model with "
                             "BatchNorm; use a larger --fraction", parameters=True)
        self.selector = Selector(cfg, self.x, labels, data.num_classes, seed, device)
        self.order_gen = random_streams.generator(seed, "dynamic_order")
        self.part_gen = random_streams.generator(seed, "dynamic_part")
        self.sample_gen = random_streams.generator(seed, "dynamic_loss_sample")
        self.r = min(cfg.subset_size, self.n)
        self.selections: list[dict] = []
        self.checks: list[dict] = []
        self.history: list[dict] = []
        self.selection_seconds: list[float] = []
        self.current: dict | None = None
        self.coresets: list[Coreset] = []
        self.cycle: list[int] = []
        self.quad: Quadratic | None = None
        self.t1, self.h0, self.since_check, self.pending = 1, None, 0, "start"
        self.forward_extra = 0
        self.step = 0

    def train(self, description: str) -> None:
        """Every epoch's steps, selecting where the update rule says; the per-epoch history."""
        cfg, budget = self.cfg, self.budget
        steps_per_epoch = [len(s) for s in budget.epoch_sizes]
        with progress() as bars:  # training steps done / planned; the coresets of the latest selection point done / P
            self.bars = bars
            training = bars.add_task(description, total=budget.steps, status="", unit="steps",
                                     plan=f"{cfg.epochs} epochs, {budget.steps:,} steps on coresets selected from "
                                          f"{self.n:,} examples")
            self.picking = bars.add_task("coresets", total=None, status="", lines=False)  # the epochs' lines say enough
            for epoch, sizes in enumerate(budget.epoch_sizes, start=1):
                for j, size in enumerate(sizes):
                    if cfg.update_rule == "every" and j == 0 and (epoch - 1) % cfg.every == 0:
                        last = min(epoch + cfg.every - 1, cfg.epochs)
                        self.select("start" if epoch == 1 else "every", epoch, sum(steps_per_epoch[epoch - 1:last]), {})
                        self.pending = None
                    elif self.pending is not None:  # the crest rule: first selection, or rho > tau
                        count = min(cfg.coresets_per_check * self.t1, budget.steps - self.step)
                        self.select(self.pending, epoch, count, {"t1": self.t1})
                        self.h0 = self.quad.hess_norm if self.h0 is None else self.h0
                        self.pending, self.since_check = None, 0
                    self.train_step(size)
                    bars.update(training, advance=1, status=f"epoch {epoch}/{cfg.epochs}")
                    if cfg.update_rule == "crest" and self.since_check >= self.t1 and self.step < budget.steps:
                        self.check()
                self.history.append(self.trainer.end_epoch(epoch, description))

    def select(self, reason: str, epoch: int, count: int, extra: dict) -> None:
        """A selection point: ``count`` coresets on the current model (and, for the crest rule, its quadratic)."""
        count = max(1, count)
        self.bars.reset(self.picking, total=count, status=f"selection point {len(self.selections) + 1}")
        start = time.perf_counter()
        self.coresets, info = self.selector.select(self.model, count, done=lambda: self.bars.advance(self.picking))
        self.selection_seconds.append(time.perf_counter() - start)
        self.current = {"step": self.step, "epoch": epoch, "reason": reason, **info, **extra,
                        "coresets": [{"indices": _tolist(c.indices), "weights": _weights_list(c.weights)}
                                     for c in self.coresets],
                        "batch_coresets": [], "batches": []}
        self.selections.append(self.current)
        self.cycle = []
        if self.cfg.update_rule == "crest":
            union = torch.cat([c.indices for c in self.coresets])
            weights = torch.cat([c.weights for c in self.coresets])
            sample = torch.randperm(self.n, generator=self.sample_gen)[:self.r]
            self.quad = Quadratic(self.model, self.x, self.labels, union, weights, sample, self.cfg.feature_batch_size,
                                  self.device)
            self.forward_extra += self.quad.forward_examples
            self.current["hessian_norm"] = self.quad.hess_norm

    def train_step(self, size: int) -> None:
        """One step on the next coreset of the cycle (a random part of it when the step is shorter)."""
        if not self.cycle:
            self.cycle = torch.randperm(len(self.coresets), generator=self.order_gen).tolist()[::-1]
        owner = self.cycle.pop()
        core = self.coresets[owner]
        if size < len(core.indices):  # a short step: a random part of the coreset
            keep = torch.sort(torch.randperm(len(core.indices), generator=self.part_gen)[:size]).values
        else:  # sizes never exceed min(m, n), and every coreset holds min(m, r) >= that
            keep = torch.arange(len(core.indices))
        batch = core.indices[keep]
        train_batch(self.trainer, self.x, self.labels, batch, core.weights[keep] if self.cfg.weighted else None)
        self.current["batch_coresets"].append(owner)
        self.current["batches"].append(_tolist(batch))
        self.step += 1
        self.since_check += 1

    def check(self) -> None:
        """The crest rule's check: rho on V_r; past tau, re-select at the next step with a new T1."""
        rho, hess_norm = self.quad.rho(self.model, self.x, self.labels, self.cfg.feature_batch_size, self.device)
        self.forward_extra += self.r
        reselect = rho > self.cfg.tau
        self.checks.append({"step": self.step, "rho": rho, "reselect": reselect, "t1": self.t1})
        self.since_check = 0
        if reselect:
            self.t1 = max(1, round(self.cfg.growth * self.h0 / max(hess_norm, 1e-12))) if self.h0 else 1
            self.pending = "rho"

    def log(self, record: dict, label_noise: dict | None, test: dict) -> dict:
        """The subset log (``prune.dynamic.subset_log``) of the finished run."""
        cfg = self.cfg
        settings = {**cfg.to_dict(), "model": self.model_name, "seed": self.seed, "device": str(self.device),
                    "posterior_layers_used": self.selector.layers_used,
                    "class_balance": ("proportional within each subset V_p" if cfg.class_balanced
                                      else "none (one greedy per V_p)")}
        result = {"backprops": self.trainer.backprops, "steps": self.step, "selections": len(self.selections),
                  "forward_examples": self.selector.forward_examples + self.forward_extra,
                  "dropped_hard": self.selector.dropped_hard,
                  "test_accuracy": test["accuracy"], "test_loss": test["loss"]}
        return {"schema": "prune.subsets/1", "prune_version": __version__, "created_at": creation_time(),
                "dataset": record, "label_noise": label_noise, "settings": settings,
                "budget": self.budget.to_dict(cfg.fraction, self.n, cfg.batch_size), "selections": self.selections,
                "checks": self.checks, "result": result, "history": self.history}


def _label_noise(clean: torch.Tensor, used: torch.Tensor) -> dict | None:
    """The labels trained on, where they differ from the data's (label noise), as manifests record it."""
    flipped = torch.nonzero(used != clean).flatten()
    if not len(flipped):
        return None
    return {"flipped": _tolist(flipped), "noisy_labels": _tolist(used[flipped])}
