"""Dynamic coreset training: select mini-batch coresets *during* training (``prune train --dynamic``).

methods.md, "Dynamic selection during training"; seed 001 Algorithm 1 (the posterior "ensemble"
loop) and CREST Algorithm 1. At each selection point, on the current model:

1. draw P random subsets V_1..V_P of size r (``subset_size``) of the training set (disjoint
   within a selection point while the candidates last; examples dropped as learned excluded);
2. select from each a mini-batch coreset S_p of size m (``batch_size``) with the shared greedy
   engine ``prune.selection.engine.facility_location``, *class-balanced within V_p*: V_p's m slots are
   split over its classes in proportion to their counts (``prune.selection.budget.class_budgets``, count m)
   and greedy runs within each class of V_p (``class_balanced=False``: one greedy over V_p);
   weights gamma from the engine (they sum to |V_p|);

   * ``ensemble``: d(i, j) = (1/M) sum_m ||g_i(w + delta_m) - g_j(w + delta_m)||, the expected
     distance over M posterior samples (``prune.selection.methods.distances.expected_euclidean``), the
     perturbations delta_m ~ N(0, sigma^2) of ``posterior_layers`` (BatchNorm affine parameters;
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
own generator seeded from ``seed``; the run writes a subset log (``prune.dynamic.subset_log``) from which
:func:`replay` trains on exactly the same batches in the same order.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from prune import __version__, features
from prune.selection.budget import class_budgets, exact_fraction
from prune.selection.engine import facility_location
from prune.errors import PruneError
from prune.features.build import stream_seed
from prune.selection.methods.distances import expected_euclidean
from prune.models import build_model, last_layer_matrix
from prune.training import console, evaluate, seed_everything

DYNAMIC_KINDS = ("ensemble", "crest", "random")
UPDATE_RULES = ("every", "crest")

# random streams (prune.features.build.stream_seed(seed, STREAM, ...))
_SUBSETS, _PERTURB, _ORDER, _PART, _LOSS_SAMPLE = 30, 31, 32, 33, 34


@dataclass(frozen=True)
class DynamicConfig:
    """The knobs of one dynamic run; recorded verbatim in the subset log's ``settings``."""

    kind: str
    fraction: float = 0.1
    epochs: int = 20
    batch_size: int = 128          # m: mini-batch = coreset size
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    subset_size: int = 500         # r: size of each random subset V_p (and of V_r)
    every: int = 1                 # R: epochs between selections (update rule "every")
    update_rule: str = "every"
    tau: float = 0.05              # CREST's threshold on rho
    growth: float = 1.0            # CREST's h (T1 growth)
    coresets_per_check: int = 5    # CREST's b: P = b * T1
    posterior_samples: int | None = None  # M; None: 4 for ensemble, 1 otherwise
    posterior_sigma: float = 0.01
    posterior_layers: str = "bn"
    class_balanced: bool = True
    weighted: bool = False         # weight each example's loss by its gamma
    learned_loss: float = 0.0      # CREST's alpha; 0 = never drop
    learned_window: int = 2        # CREST's T2, in selections of the example
    feature_batch_size: int = 1024

    @property
    def samples(self) -> int:
        if self.posterior_samples is not None:
            return self.posterior_samples
        return 4 if self.kind == "ensemble" else 1

    def check(self) -> None:
        if self.kind not in DYNAMIC_KINDS:
            raise PruneError(f"unknown --dynamic {self.kind!r}; choose one of: {', '.join(DYNAMIC_KINDS)}")
        if self.update_rule not in UPDATE_RULES:
            raise PruneError(f"unknown --update-rule {self.update_rule!r}; choose one of: {', '.join(UPDATE_RULES)}")
        f = exact_fraction(self.fraction)
        if not 0 < f <= 1:
            raise PruneError(f"--fraction must be in (0, 1] (the fraction of full-data backprops), got {self.fraction}")
        for flag, value, low in (("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1),
                                 ("--subset-size", self.subset_size, 1), ("--every", self.every, 1),
                                 ("--learned-window", self.learned_window, 1),
                                 ("coresets per check (b)", self.coresets_per_check, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PruneError(f"{flag} must be a whole number >= {low}, got {value!r}")
        if self.subset_size < self.batch_size:
            raise PruneError(f"--subset-size ({self.subset_size}) must be at least --batch-size ({self.batch_size}): "
                             "each coreset of one mini-batch is selected from one subset")
        for flag, value in (("--tau", self.tau), ("--lr", self.lr), ("momentum", self.momentum),
                            ("weight decay", self.weight_decay), ("--posterior-sigma", self.posterior_sigma),
                            ("growth (h)", self.growth), ("--learned-loss", self.learned_loss)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise PruneError(f"{flag} must be a finite number >= 0, got {value!r}")
        m = self.samples
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise PruneError(f"--posterior-samples must be a whole number >= 1, got {m!r}")
        if self.kind == "ensemble" and m < 2:
            raise PruneError("--dynamic ensemble needs --posterior-samples >= 2 (the expected distance over M samples)")
        if self.kind != "ensemble" and m != 1:
            raise PruneError(f"--dynamic {self.kind} uses the gradients at the current weights (M = 1); "
                             "drop --posterior-samples or use --dynamic ensemble")
        if self.posterior_layers not in ("bn", "fc", "all"):
            raise PruneError(f"unknown --posterior-layers {self.posterior_layers!r}; choose bn, fc or all")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["posterior_samples"] = self.samples
        return out


# --------------------------------------------------------------------------------------------
# Budget
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Backprops of the whole run and the step sizes of every epoch."""

    backprops: int
    epoch_backprops: list[int]
    epoch_sizes: list[list[int]]   # the batch size of every step, per epoch

    @property
    def steps(self) -> int:
        return sum(len(s) for s in self.epoch_sizes)

    def to_dict(self, fraction, n: int, batch_size: int) -> dict:
        return {"fraction": fraction, "num_examples": n, "epochs": len(self.epoch_sizes), "batch_size": batch_size,
                "backprops": self.backprops, "steps": self.steps, "epoch_backprops": self.epoch_backprops,
                "epoch_steps": [len(s) for s in self.epoch_sizes],
                "rule": "backprops = round(fraction * num_examples * epochs), rounded half up; "
                        "epoch e gets floor(e B / E) - floor((e - 1) B / E)"}


def plan_budget(fraction, n: int, epochs: int, batch_size: int) -> Budget:
    """B = round(f n E) backprops, split over epochs and into steps of at most ``batch_size``."""
    f = exact_fraction(fraction)
    if not 0 < f <= 1:
        raise PruneError(f"--fraction must be in (0, 1], got {fraction}")
    if f * n < 1:
        raise PruneError(f"--fraction {fraction} of {n} examples is less than one backprop per epoch; "
                         "use a larger --fraction")
    total = math.floor(f * n * epochs + Fraction(1, 2))
    per_epoch = [total * e // epochs - total * (e - 1) // epochs for e in range(1, epochs + 1)]
    sizes = []
    for b in per_epoch:
        steps = [batch_size] * (b // batch_size) + ([b % batch_size] if b % batch_size else [])
        if len(steps) >= 2 and steps[-1] == 1:  # never a step of one example (BatchNorm cannot train on it)
            pair = steps[-2] + 1
            steps[-2:] = [pair - pair // 2, pair // 2]
        sizes.append(steps)
    assert sum(map(sum, sizes)) == total
    return Budget(total, per_epoch, sizes)


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


@dataclass
class Coreset:
    indices: torch.Tensor  # int64 dataset indices (selection order)
    weights: torch.Tensor  # float64 gamma


class _Subsets:
    """Random subsets of size r from the candidates: chunks of one permutation, a new one when used up."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator
        self.perm: torch.Tensor | None = None
        self.pos = 0
        self.pool_key = None

    def draw(self, pool: torch.Tensor, r: int) -> torch.Tensor:
        key = (len(pool), int(pool.sum()))
        if self.perm is None or self.pool_key != key or self.pos + r > len(self.perm):
            self.perm = pool[torch.randperm(len(pool), generator=self.generator)]
            self.pos, self.pool_key = 0, key
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
        self.subsets = _Subsets(torch.Generator().manual_seed(stream_seed(seed, _SUBSETS)))
        self.random = torch.Generator().manual_seed(stream_seed(seed, _SUBSETS, 1))
        self.low_streak = torch.zeros(len(labels), dtype=torch.int64)  # consecutive selections with loss < alpha
        self.forward_examples = 0
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
                generator = torch.Generator().manual_seed(stream_seed(self.seed, _PERTURB, self.points, m))
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

    def select(self, model: nn.Module, count: int) -> tuple[list[Coreset], dict]:
        """``count`` coresets of size m from ``count`` fresh random subsets."""
        cfg = self.cfg
        start = time.perf_counter()
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
        else:
            rows_all = torch.cat(subsets)
            grads, loss = self._gradients(model, rows_all)
            if cfg.learned_loss > 0:
                low = loss < cfg.learned_loss
                self.low_streak[rows_all] = torch.where(low, self.low_streak[rows_all] + 1, torch.zeros_like(low, dtype=torch.int64))
            offset = 0
            with _one_thread():  # many tiny greedy runs: no thread-pool switch per call (engine.CPU_THREADS)
                for v in subsets:
                    g = grads[offset:offset + len(v)]
                    offset += len(v)
                    chosen, weights = [], []
                    for rows, k in _class_split(self.labels[v], m, self.num_classes, cfg.class_balanced):
                        distances = expected_euclidean(g[rows]).to(self.device, torch.float32)
                        result = facility_location(distances, k)
                        chosen.append(v[rows[result.order.cpu()]])
                        weights.append(result.weights.cpu().double())
                        objective += result.objective
                    coresets.append(Coreset(torch.cat(chosen), torch.cat(weights)))
        self.points += 1
        info = {"subsets": count, "subset_size": r, "objective": objective,
                "candidates": len(pool), "seconds": time.perf_counter() - start}
        return coresets, info


# --------------------------------------------------------------------------------------------
# CREST's quadratic model (eq. 6, 10)
# --------------------------------------------------------------------------------------------


class Quadratic:
    """F(delta) = L_r(w) + <g_S, delta> + 1/2 sum lambda_S delta^2 on the last layer, built at selection."""

    def __init__(self, model, x, labels, union: torch.Tensor, weights: torch.Tensor, sample: torch.Tensor,
                 batch_size: int, device):
        feats = features.extract_features(model, x[union], labels[union], batch_size=batch_size, device=device)
        w = weights.double()[:, None] / weights.double().sum()
        h = features.with_bias(feats["embedding"].double())
        self.grad = (w * feats["grad_logit"].double()).T @ h          # (C, e + 1)
        self.hess = (w * feats["hess_logit"].double()).T @ (h * h)     # (C, e + 1)
        self.w0 = last_layer_matrix(model)
        self.sample = sample
        self.loss0, self.hess_norm = self.sample_loss(model, x, labels, batch_size, device)
        self.forward_examples = len(union) + len(sample)

    def sample_loss(self, model, x, labels, batch_size, device) -> tuple[float, float]:
        """Mean loss on V_r, and the norm of V_r's mean last-layer Hessian diagonal."""
        feats = features.extract_features(model, x[self.sample], labels[self.sample], batch_size=batch_size,
                                          device=device)
        h = features.with_bias(feats["embedding"].double())
        hess = feats["hess_logit"].double().T @ (h * h) / len(self.sample)
        return float(feats["loss"].double().mean()), float(hess.norm())

    def rho(self, model, x, labels, batch_size, device) -> tuple[float, float]:
        delta = last_layer_matrix(model) - self.w0
        model_value = self.loss0 + float((self.grad * delta).sum()) + 0.5 * float((self.hess * delta * delta).sum())
        actual, hess_norm = self.sample_loss(model, x, labels, batch_size, device)
        return abs(model_value - actual) / max(actual, 1e-12), hess_norm


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


class _Trainer:
    """SGD steps on given batches, cosine learning rate over epochs; shared by run and replay."""

    def __init__(self, model: nn.Module, x, labels, cfg_lr: float, momentum: float, weight_decay: float, epochs: int,
                 weighted: bool, device):
        self.model, self.x, self.labels, self.device, self.weighted = model, x, labels, device, weighted
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg_lr, momentum=momentum, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(epochs, 1))
        self.backprops = 0
        self.has_batchnorm = any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in model.modules())
        self._loss = torch.zeros((), device=device)
        self._correct = torch.zeros((), device=device, dtype=torch.int64)
        self._count = 0

    def step(self, batch: torch.Tensor, weights: torch.Tensor | None) -> None:
        if len(batch) < 2 and self.has_batchnorm:
            raise PruneError("a batch of one example cannot train a model with BatchNorm; use a larger --fraction")
        self.model.train()
        xb, yb = self.x[batch].to(self.device), self.labels[batch].to(self.device)
        logits = self.model(xb)
        losses = nn.functional.cross_entropy(logits, yb, reduction="none")
        if weights is None:
            loss = losses.mean()
        else:
            w = weights.to(self.device, torch.float32)
            loss = (w * losses).sum() / w.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.backprops += len(batch)
        self._loss += losses.detach().sum()
        self._correct += (logits.argmax(1) == yb).sum()
        self._count += len(batch)

    def end_epoch(self, epoch: int, epochs: int, description: str) -> dict:
        self.scheduler.step()
        loss, correct, count = self._loss.item(), self._correct.item(), max(self._count, 1)
        if not math.isfinite(loss):
            raise PruneError(f"{description} diverged (loss is NaN or inf at epoch {epoch}); lower --lr and retry")
        self._loss.zero_(), self._correct.zero_()
        self._count = 0
        row = {"epoch": epoch, "train_loss": loss / count, "train_accuracy": correct / count}
        if not console.is_terminal:
            console.print(f"{description}: epoch {epoch}/{epochs} loss {row['train_loss']:.4f} "
                          f"accuracy {row['train_accuracy']:.4f}", highlight=False)
        return row


@dataclass
class DynamicResult:
    model: nn.Module
    log: dict
    history: list[dict]
    backprops: int
    test: dict


def _tolist(t: torch.Tensor) -> list:
    return [int(v) for v in t.tolist()]


def _weights_list(t: torch.Tensor) -> list:
    return [int(v) if float(v).is_integer() else float(v) for v in t.tolist()]


def run_dynamic(data, cfg: DynamicConfig, *, model_name: str, seed: int, device: torch.device,
                dataset_record: dict | None = None, labels: torch.Tensor | None = None,
                description: str = "dynamic") -> DynamicResult:
    """Train a fresh model on coresets selected during training; returns the model, log and metrics."""
    from prune.manifest import creation_time

    cfg.check()
    x = data.train.x
    labels = data.train.y if labels is None else labels
    n = len(labels)
    budget = plan_budget(cfg.fraction, n, cfg.epochs, cfg.batch_size)
    seed_everything(seed)
    model = build_model(model_name, data.input_shape, data.num_classes).to(device)
    trainer = _Trainer(model, x, labels, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs, cfg.weighted, device)
    if trainer.has_batchnorm and any(1 in sizes for sizes in budget.epoch_sizes):
        raise PruneError(f"--fraction {cfg.fraction} leaves a step of one example, which cannot train a model with "
                         "BatchNorm; use a larger --fraction")
    selector = Selector(cfg, x, labels, data.num_classes, seed, device)
    order_gen = torch.Generator().manual_seed(stream_seed(seed, _ORDER))
    part_gen = torch.Generator().manual_seed(stream_seed(seed, _PART))
    sample_gen = torch.Generator().manual_seed(stream_seed(seed, _LOSS_SAMPLE))
    r = min(cfg.subset_size, n)
    steps_per_epoch = [len(s) for s in budget.epoch_sizes]

    selections: list[dict] = []
    checks: list[dict] = []
    history: list[dict] = []
    current: dict | None = None
    coresets: list[Coreset] = []
    cycle: list[int] = []
    quad: Quadratic | None = None
    t1, h0 = 1, None
    since_check = 0
    pending = "start"
    forward_extra = 0
    step = 0
    start_time = time.perf_counter()

    def select_now(reason: str, epoch: int, count: int, extra: dict) -> None:
        nonlocal current, coresets, cycle, quad, forward_extra
        count = max(1, count)
        coresets, info = selector.select(model, count)
        current = {"step": step, "epoch": epoch, "reason": reason, **info, **extra,
                   "coresets": [{"indices": _tolist(c.indices), "weights": _weights_list(c.weights)} for c in coresets],
                   "batch_coresets": [], "batches": []}
        selections.append(current)
        cycle = []
        if cfg.update_rule == "crest":
            union = torch.cat([c.indices for c in coresets])
            weights = torch.cat([c.weights for c in coresets])
            sample = torch.randperm(n, generator=sample_gen)[:r]
            quad = Quadratic(model, x, labels, union, weights, sample, cfg.feature_batch_size, device)
            forward_extra += quad.forward_examples
            current["hessian_norm"] = quad.hess_norm

    for epoch, sizes in enumerate(budget.epoch_sizes, start=1):
        for j, size in enumerate(sizes):
            if cfg.update_rule == "every" and j == 0 and (epoch - 1) % cfg.every == 0:
                last = min(epoch + cfg.every - 1, cfg.epochs)
                count = sum(steps_per_epoch[epoch - 1:last])
                select_now("start" if epoch == 1 else "every", epoch, count, {})
                pending = None
            elif pending is not None:  # the crest rule: first selection, or rho > tau
                select_now(pending, epoch, min(cfg.coresets_per_check * t1, budget.steps - step), {"t1": t1})
                if h0 is None:
                    h0 = quad.hess_norm
                pending, since_check = None, 0
            if not cycle:
                cycle = torch.randperm(len(coresets), generator=order_gen).tolist()[::-1]
            owner = cycle.pop()
            core = coresets[owner]
            if size < len(core.indices):  # a short step: a random part of the coreset
                keep = torch.sort(torch.randperm(len(core.indices), generator=part_gen)[:size]).values
            else:  # sizes never exceed min(m, n), and every coreset holds min(m, r) >= that
                keep = torch.arange(len(core.indices))
            batch = core.indices[keep]
            trainer.step(batch, core.weights[keep] if cfg.weighted else None)
            current["batch_coresets"].append(owner)
            current["batches"].append(_tolist(batch))
            step += 1
            since_check += 1
            if cfg.update_rule == "crest" and since_check >= t1 and step < budget.steps:
                rho, hess_norm = quad.rho(model, x, labels, cfg.feature_batch_size, device)
                forward_extra += r
                reselect = rho > cfg.tau
                checks.append({"step": step, "rho": rho, "reselect": reselect, "t1": t1})
                since_check = 0
                if reselect:
                    t1 = max(1, round(cfg.growth * h0 / max(hess_norm, 1e-12))) if h0 else 1
                    pending = "rho"
        history.append(trainer.end_epoch(epoch, cfg.epochs, description))
    wall = time.perf_counter() - start_time

    if trainer.backprops != budget.backprops:  # the invariant the budget rule promises
        raise AssertionError(f"back-propagated {trainer.backprops} examples, planned {budget.backprops}")
    test = evaluate(model, data.test.x, data.test.y, device=device) if len(data.test) else {"accuracy": None, "loss": None}
    record = dataset_record or data.record()
    settings = {**cfg.to_dict(), "model": model_name, "seed": seed, "device": str(device),
                "posterior_layers_used": selector.layers_used,
                "class_balance": "proportional within each subset V_p" if cfg.class_balanced else "none (one greedy per V_p)"}
    selection_seconds = sum(s["seconds"] for s in selections)
    result = {"backprops": trainer.backprops, "steps": step, "selections": len(selections),
              "forward_examples": selector.forward_examples + forward_extra,
              "selection_seconds": selection_seconds, "wall_seconds": wall,
              "test_accuracy": test["accuracy"], "test_loss": test["loss"]}
    log = {"schema": "prune.subsets/1", "prune_version": __version__, "created_at": creation_time(),
           "dataset": record, "label_noise": _label_noise(data.train.y, labels), "settings": settings,
           "budget": budget.to_dict(cfg.fraction, n, cfg.batch_size), "selections": selections,
           "checks": checks, "result": result, "history": history}
    return DynamicResult(model, log, history, trainer.backprops, test)


def _label_noise(clean: torch.Tensor, used: torch.Tensor) -> dict | None:
    """The labels trained on, where they differ from the data's (label noise), as manifests record it."""
    flipped = torch.nonzero(used != clean).flatten()
    if not len(flipped):
        return None
    return {"flipped": _tolist(flipped), "noisy_labels": _tolist(used[flipped])}


def replay(log: dict, data, *, device: torch.device, labels: torch.Tensor | None = None,
           description: str = "replay") -> DynamicResult:
    """Train a fresh model on a subset log's batches, in its order, with its model, seed and optimiser.

    The labels are the data's with the log's ``label_noise`` applied (unless ``labels`` is given).
    """
    s = log["settings"]
    if labels is None:
        labels = data.train.y.clone()
        noise = log.get("label_noise")
        if noise:
            labels[torch.tensor(noise["flipped"], dtype=torch.int64)] = torch.tensor(noise["noisy_labels"],
                                                                                   dtype=torch.int64)
    x = data.train.x
    seed_everything(int(s["seed"]))
    model = build_model(s["model"], data.input_shape, data.num_classes).to(device)
    epoch_steps = log["budget"]["epoch_steps"]
    trainer = _Trainer(model, x, labels, s["lr"], s["momentum"], s["weight_decay"], len(epoch_steps),
                       bool(s["weighted"]), device)
    from prune.dynamic.subset_log import batches as all_batches

    sequence = all_batches(log)
    weights_of: dict[tuple[int, int], dict[int, float]] = {}
    history, position = [], 0
    for epoch, count in enumerate(epoch_steps, start=1):
        for _ in range(count):
            point, owner, batch = sequence[position]
            position += 1
            weights = None
            if s["weighted"]:
                key = (point, owner)
                if key not in weights_of:
                    core = log["selections"][point]["coresets"][owner]
                    weights_of[key] = dict(zip(core["indices"], core["weights"]))
                weights = torch.tensor([weights_of[key][i] for i in batch], dtype=torch.float64)
            trainer.step(torch.tensor(batch, dtype=torch.int64), weights)
        history.append(trainer.end_epoch(epoch, len(epoch_steps), description))
    test = evaluate(model, data.test.x, data.test.y, device=device) if len(data.test) else {"accuracy": None, "loss": None}
    return DynamicResult(model, log, history, trainer.backprops, test)


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """True when two models hold bit-identical parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def counts_histogram(log: dict) -> np.ndarray:
    """How many examples were selected 0, 1, 2, ... times (for quick checks)."""
    from prune.dynamic.subset_log import selection_counts

    selected, _ = selection_counts(log)
    return np.bincount(selected)


# --------------------------------------------------------------------------------------------
# Command line (`prune train --dynamic`, `prune train --manifest LOG`, `prune inspect LOG`)
# --------------------------------------------------------------------------------------------


def train_cli(*, dynamic: str | None, manifest, dataset: str | None, data_root, download: bool, model: str | None,
              epochs: int, lr: float, batch_size: int, weighted: bool, force: bool, metrics, seed: int,
              device: str, source_options: dict, fraction: float | None, every: int, subset_size: int,
              posterior_samples: int | None, posterior_sigma: float, posterior_layers: str, update_rule: str,
              tau: float, learned_loss: float, learned_window: int, log) -> dict:
    """``prune train --dynamic KIND`` (a dynamic run) or ``prune train --manifest LOG`` (its replay)."""
    import json

    from rich.table import Table

    from prune.dynamic import subset_log
    from prune.api import dataset_record, recorded_options
    from prune.atomic import ensure_writable, write_text
    from prune.data import load_dataset
    from prune.manifest import dataset_mismatch
    from prune.models import default_model
    from prune.training import resolve_device

    torch_device = resolve_device(device)
    if dynamic is not None and manifest is not None:
        raise PruneError("--dynamic selects during training and --manifest trains on a saved subset; give one of them")
    for path in (log, metrics):
        if path is not None:
            ensure_writable(path)
    if manifest is not None:  # replay a subset log
        if log is not None:
            raise PruneError("--log writes the log of a --dynamic run; a replay (--manifest LOG) writes none")
        recorded = subset_log.load(manifest)
        record = recorded["dataset"]
        options = {**recorded_options(record), **source_options} if str(record["source"]).startswith("hf:") else source_options
        data = load_dataset(dataset or record["source"], data_root or record.get("root"), download, **options)
        counts = torch.bincount(data.train.y, minlength=data.num_classes).tolist()
        problem = dataset_mismatch(record, fingerprint=data.fingerprint, num_examples=len(data.train),
                                   class_counts=counts, what="subset log")
        if problem is not None:
            message = f"subset log was made for {record['source']!r} but the data given does not match: {problem}"
            if not force:
                raise PruneError(message + "; pass the dataset the log was made from, or --force")
            console.print(f"[yellow]warning:[/] {message} (continuing because of --force)")
        s = recorded["settings"]
        console.print(f"replaying {manifest}: {len(recorded['selections'])} selection points, "
                      f"{recorded['budget']['steps']} steps; model, seed, epochs, lr and batches come from the log",
                      highlight=False)
        start = time.perf_counter()
        result = replay(recorded, data, device=torch_device)
        wall = time.perf_counter() - start
        kind, model_name, run_epochs = s["kind"], s["model"], len(recorded["budget"]["epoch_steps"])
        extra = {"replayed": str(manifest), "selections": len(recorded["selections"])}
        fraction_used, run_seed = s["fraction"], s["seed"]
    else:
        data = load_dataset(dataset or "digits", data_root, download, **source_options)
        model_name = model or default_model(data.source, data.input_shape)
        cfg = DynamicConfig(kind=dynamic, fraction=0.1 if fraction is None else fraction, epochs=epochs,
                            batch_size=batch_size, lr=lr, subset_size=subset_size, every=every,
                            update_rule=update_rule, tau=tau, posterior_samples=posterior_samples,
                            posterior_sigma=posterior_sigma, posterior_layers=posterior_layers, weighted=weighted,
                            learned_loss=learned_loss, learned_window=learned_window)
        cfg.check()
        if subset_size > len(data.train):
            console.print(f"[yellow]note:[/] --subset-size {subset_size} exceeds the {len(data.train)} training "
                          "examples; each subset is the whole training set", highlight=False)
        start = time.perf_counter()
        result = run_dynamic(data, cfg, model_name=model_name, seed=seed, device=torch_device,
                             dataset_record=dataset_record(data, data_root), description=f"dynamic {dynamic}")
        wall = time.perf_counter() - start
        if log is not None:
            subset_log.save(result.log, log)
        kind, run_epochs, fraction_used, run_seed = dynamic, epochs, cfg.fraction, seed
        r = result.log["result"]
        extra = {"selections": r["selections"], "forward_examples": r["forward_examples"],
                 "selection_seconds": r["selection_seconds"], "log": str(log) if log else None,
                 "checks": len(result.log["checks"])}
    test = result.test
    n = len(data.train)
    out = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "dynamic": kind, "fraction": fraction_used,
           "backprops": result.backprops, "full_data_backprops": n * run_epochs,
           "train_examples": len({i for p in result.log["selections"] for b in p["batches"] for i in b}),
           "epochs": run_epochs, "wall_seconds": wall, "model": model_name, "weighted": bool(weighted), "seed": run_seed,
           "manifest": str(manifest) if manifest else None, "dataset": data.source, **extra,
           "history": result.history}
    table = Table(title="prune train (dynamic)")
    for column in ("dataset", "selection", "model", "epochs", "backprops", "test accuracy", "seconds"):
        table.add_column(column)
    accuracy = "-" if test["accuracy"] is None else f"{test['accuracy']:.4f}"
    table.add_row(data.source, f"{kind} {float(fraction_used):g}", model_name, str(run_epochs),
                  f"{result.backprops} ({result.backprops / (n * run_epochs):.1%})", accuracy, f"{wall:.1f}")
    console.print(table)
    if log is not None and manifest is None:
        console.print(f"subset log -> {log}", highlight=False)
    if metrics:
        write_text(metrics, json.dumps(out, indent=1) + "\n")
    return out


def inspect_cli(path, plot=None) -> dict:
    """``prune inspect LOG``: summary table and a PNG histogram of selection counts."""
    import json

    from rich.table import Table

    from prune.dynamic import subset_log

    log = subset_log.load(path)
    facts = subset_log.summary(log)
    s, d, b = log["settings"], log["dataset"], log["budget"]
    info = Table(title=str(path), show_header=False)
    info.add_row("dataset", f"{d['source']} ({d['num_examples']} examples, {d['num_classes']} classes)")
    info.add_row("fingerprint", d["fingerprint"])
    info.add_row("dynamic", f"{s['kind']}, update rule {s['update_rule']}"
                 + (f" (every {s['every']} epochs)" if s["update_rule"] == "every" else f" (tau {s['tau']})"))
    knobs = {k: s[k] for k in ("subset_size", "batch_size", "posterior_samples", "posterior_sigma", "class_balance",
                               "weighted", "learned_loss") if k in s}
    info.add_row("settings", json.dumps(knobs))
    info.add_row("budget", f"fraction {b['fraction']}: {facts['backprops']} backprops "
                 f"(planned {b['backprops']} = {b['fraction']} x {d['num_examples']} x {b['epochs']} epochs) "
                 f"in {facts['steps']} steps")
    reasons = ", ".join(f"{k} {v}" for k, v in facts["reasons"].items())
    info.add_row("selection points", f"{facts['selection_points']} ({reasons}); {facts['coresets']} coresets")
    if facts["checks"]:
        info.add_row("crest checks", f"{facts['checks']} evaluations of rho, {facts['reselections_by_rho']} re-selections")
    info.add_row("examples selected", f"{facts['distinct_selected']} distinct ({facts['distinct_selected'] / d['num_examples']:.1%}); "
                 f"each {facts['mean_selected']:.2f} times on average, at most {facts['max_selected']}")
    info.add_row("examples trained", f"{facts['distinct_trained']} distinct")
    result = log.get("result") or {}
    if result.get("test_accuracy") is not None:
        info.add_row("test accuracy", f"{result['test_accuracy']:.4f}")
    info.add_row("model, seed", f"{s['model']}, {s['seed']}")
    info.add_row("created", f"{log['created_at']} by prune {log['prune_version']}")
    console.print(info)
    hist = counts_histogram(log)
    counts = Table(title="times selected")
    counts.add_column("times", justify="right")
    counts.add_column("examples", justify="right")
    for times, number in enumerate(hist.tolist()):
        if number:
            counts.add_row(str(times), str(number))
    console.print(counts)
    target = plot or subset_log.default_plot_path(path)
    subset_log.plot_counts(log, target)
    console.print(f"histogram -> {target}", highlight=False)
    return {**facts, "plot": str(target)}
