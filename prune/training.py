"""Devices, seeding, the SGD training loop and evaluation, with rich progress bars.

Warm-up (before feature extraction), ``prune train`` (a fresh model on a subset) and dynamic
selection (``prune.dynamic``) share one loop, ``Trainer``. Defaults follow the papers' protocol (methods.md, "Evaluation protocol"): SGD with
momentum 0.9, weight decay 5e-4, batch 128, cosine-annealed learning rate; the base learning
rate is 0.05 (the papers' 0.1 is tuned for ResNets on CIFAR and overshoots on small MLPs).
``schedule="constant"`` keeps the learning rate fixed instead, as DeepCore and LCMat do for
the warm-up before selection.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from torch import nn

from prune import augment as augmentation
from prune import random_streams
from prune.data.streaming import batches
from prune.distributed import World
from prune.errors import PruneError
from prune.models import build_model, default_model, load_checkpoint

console = Console(stderr=True, soft_wrap=True)

SCHEDULES = ("cosine", "constant")
#: the names ``resolve_device`` takes
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one SGD run; recorded verbatim in manifests and stores."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # "cosine": anneal to 0 over the epochs; "constant": keep lr
    augment: str = "none"  # "standard": random crop with padding and horizontal flip (prune.augment)
    amp: bool = False  # forward passes in bfloat16 autocast (--amp; CUDA), the loss in float32
    weighted: bool = False  # prune train --weighted: each example's loss weighted by its manifest's gamma

    def __post_init__(self):
        if self.augment not in augmentation.AUGMENTS:
            raise PruneError(f"unknown --augment {self.augment!r}; choose one of: {', '.join(augmentation.AUGMENTS)}",
                             parameters=True)
        if self.schedule not in SCHEDULES:
            raise PruneError(f"unknown learning-rate schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise PruneError(f"the number of epochs must be a whole number >= 0, got {self.epochs!r}",
                             python=f"epochs must be a whole number >= 0, got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise PruneError(f"--batch-size must be a whole number >= 1, got {self.batch_size!r}", parameters=True)
        for flag, value in (("--lr", self.lr), ("momentum", self.momentum), ("weight decay", self.weight_decay)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise PruneError(f"{flag} must be a finite number >= 0, got {value!r}", parameters=True)

    def to_dict(self) -> dict:
        """The fields; ``schedule``, ``augment`` and ``amp`` only when they are not the defaults
        ("cosine", "none", False), so the records of stores, manifests and ``--resume`` work folders written before
        they existed stay equal."""
        out = asdict(self)
        if out["schedule"] == "cosine":
            del out["schedule"]
        if out["augment"] == "none":
            del out["augment"]
        if not out["amp"]:
            del out["amp"]
        if not out["weighted"]:
            del out["weighted"]
        return out


def check_amp(amp: bool, device: torch.device) -> bool:
    """``--amp`` is for CUDA: on a CPU, bfloat16 autocast is slower than float32."""
    if amp and device.type != "cuda":
        raise PruneError("--amp (mixed precision) needs a CUDA device; drop it on the CPU", parameters=True)
    return amp


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise PruneError("--device cuda was asked for, but no CUDA device is available; use --device auto or cpu",
                             parameters=True)
        return torch.device("cuda")
    raise PruneError(f"unknown --device {name!r}; choose auto, cpu or cuda", parameters=True)


SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit


def check_seed(seed, name: str = "--seed") -> int:
    """``seed`` if it is an integer in 0..2**32 - 1 (what every generator prune seeds accepts), else ``PruneError``
    naming the flag ``name`` (a Python caller reads the parameter: ``--noise-seed`` is ``noise_seed``)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
        raise PruneError(f"{name} must be an integer from 0 to {SEED_MAX}, got {seed!r}", parameters=True)
    return int(seed)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialisation uses torch's global generator)."""
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


_quiet = False


@contextmanager
def quiet(on: bool = True):
    """Within this block (``--quiet``): no progress bars and no per-epoch lines; results still print."""
    global _quiet
    before, _quiet = _quiet, on
    try:
        yield
    finally:
        _quiet = before


def epoch_lines() -> bool:
    """Whether loops print one line per epoch: on a log or pipe, where no bar is drawn, unless quiet."""
    return not console.is_terminal and not _quiet


def progress() -> Progress:
    """The progress bar style used by every long loop: drawn on a terminal; in a log or a pipe, where rich
    draws nothing, each task prints one line when it starts and one when it ends (``_Progress``); unless quiet."""
    return _Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=_quiet or not console.is_terminal,
        plain=epoch_lines(),
    )


class _Progress(Progress):
    """rich's ``Progress``, with ``plain`` (a log or a pipe): a task's start prints one line, its end (the
    block's normal exit, or a ``reset`` that starts it over) another with its count and elapsed time, and
    nothing per step. A task's optional fields: ``plan``, the start line's text (default: its total and
    ``unit``), ``unit`` (what it counts: "examples", "pools", "steps"), ``lines``: False, no lines for this
    task; "done", the end's line only (a short task inside another, whose start would say nothing new)."""

    def __init__(self, *columns, plain: bool = False, **options):
        super().__init__(*columns, **options)
        self.plain = plain
        self.began: dict = {}  # the plain tasks started and not yet ended -> perf_counter at their start
        self.wording: dict = {}  # task -> its plan, unit and lines (a reset may replace the task's fields)

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields) -> TaskID:
        task = super().add_task(description, start=start, total=total, completed=completed, visible=visible, **fields)
        self.wording[task] = {key: fields[key] for key in ("plan", "unit", "lines") if key in fields}
        self._begin(task)
        return task

    def reset(self, task_id: TaskID, **options) -> None:
        self._end(task_id)
        super().reset(task_id, **options)
        self.wording[task_id].update({key: options[key] for key in ("plan", "unit", "lines") if key in options})
        self._begin(task_id)

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        if exc_type is None:  # an error or Ctrl-C says so itself; no "done" line
            for task_id in list(self.began):
                self._end(task_id)
        super().__exit__(exc_type, exc_val, exc_tb)

    def _begin(self, task_id: TaskID) -> None:
        task, wording = self._tasks[task_id], self.wording[task_id]
        if not self.plain or wording.get("lines") is False:
            return
        self.began[task_id] = time.perf_counter()
        if wording.get("lines") == "done":
            return
        unit = wording.get("unit")
        plan = wording.get("plan") or ("" if task.total is None else
                                       f"{int(task.total):,} {unit}" if unit else f"total {int(task.total):,}")
        console.print(f"{task.description}: {plan} ..." if plan else f"{task.description} ...", highlight=False)

    def _end(self, task_id: TaskID) -> None:
        began = self.began.pop(task_id, None)
        if began is None:
            return
        task, seconds, wording = self._tasks[task_id], time.perf_counter() - began, self.wording[task_id]
        unit = f" {wording['unit']}" if wording.get("unit") else ""
        if task.total is None:
            count = ""
        elif wording.get("lines") == "done":  # no start line gave the total: the count done alone
            count = f", {int(task.completed):,}{unit}"
        else:
            count = f", {int(task.completed):,}/{int(task.total):,}{unit}"
        console.print(f"{task.description}: done{count} in {seconds:.1f} s", highlight=False)


@contextmanager
def phase(description: str):
    """A step with no count of its own (loading the data): on a terminal a bar with its elapsed time; in a log
    or a pipe a line when it starts and one when it is done (``progress``); nothing when quiet. ``description``
    is rich markup, as every task's (escape what quotes the user's files)."""
    with progress() as bars:
        bars.add_task(description, total=None, status="")
        yield


_warmed: set[str] = set()


def warm_up(device: torch.device) -> None:
    """Pay training's one-off start-up costs on ``device`` once per process, so timed runs leave them out:
    torch.optim's first optimizer imports torch._dynamo (seconds), and CUDA creates its context and cuBLAS
    handles on first use. Touches no random generator."""
    if str(device) in _warmed:
        return
    weight = torch.zeros(2, 2, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    nn.functional.cross_entropy(weight @ weight, torch.zeros(2, dtype=torch.int64, device=device)).backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    _warmed.add(str(device))


class Trainer:
    """SGD with momentum and weight decay on the batches it is given, the learning rate stepped per epoch.

    The one training loop: ``fit`` (warm-up and ``prune train``) feeds it shuffled batches of a
    fixed set, a dynamic run (``prune.dynamic``) the mini-batch coresets it selects. ``step``
    back-propagates one batch: the mean loss, or with ``weights`` (per example; CRAIG's gamma)
    the weighted mean ``sum w_i l_i / sum w_i`` over the batch (``total``: the denominator, when
    the batch is one rank's part of a larger one). ``end_epoch`` steps the schedule, checks for
    divergence and returns the epoch's mean training loss and accuracy over the examples stepped on.

    Under torchrun (``world`` of more than one process) the model trains data-parallel with
    ``DistributedDataParallel``: each rank's loss is its part's share of the global batch's mean,
    so the averaged gradient is the one-process gradient, up to float rounding.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, *, device: torch.device, seed: int,
                 world: World | None = None):
        self.model, self.config, self.device = model.to(device), config, device
        self.ranks = world.size if world is not None else 1
        self.rank = world.rank if world is not None else 0
        self.trained = model
        if self.ranks > 1:
            self.trained = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        if config.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(config.epochs, 1))
        else:
            self.scheduler = torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=1.0, total_iters=0)
        self.augment = random_streams.generator(seed, "augment")
        self.shuffle = random_streams.generator(seed, "shuffle")  # fit's batch order
        self.has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        self.backprops = 0
        self.trained_on = "the examples trained on"  # what the per-epoch lines' loss and accuracy are over
        self._loss = torch.zeros((), device=device)
        self._correct = torch.zeros((), device=device, dtype=torch.int64)
        self._count = 0

    def fit(self, x, y: torch.Tensor, *, weights: torch.Tensor | None = None,
            on_epoch_end: Callable[[int, nn.Module], None] | None = None, description: str = "train",
            trained_on: str | None = None) -> list[dict]:
        """Train on (x, y) for ``config.epochs`` shuffled epochs; the per-epoch history.

        ``weights`` (per example) weight the loss (CRAIG's gamma); ``on_epoch_end(epoch, model)`` runs
        after every epoch (warm-up checkpoints). ``description`` names the run in its progress and
        per-epoch lines, ``trained_on`` what the per-epoch loss and accuracy are measured on (default:
        "the examples trained on"). Under torchrun every rank draws the same shuffle, so
        the global batch is still ``config.batch_size`` rows, and takes its contiguous part of each
        batch; BatchNorm normalises with each rank's part, and augmentation draws differ from one
        process's. Every rank calls this (and ``on_epoch_end``) and ends with the same weights.
        """
        config, device = self.config, self.device
        if config.augment != "none" and x.ndim != 4:
            raise PruneError(f"--augment {config.augment} needs images, but the data are vectors; use --augment none",
                             parameters=True)
        if isinstance(x, torch.Tensor):  # tensors move once; images on disk are decoded batch by batch
            x = x.to(device)
        y = y.to(device)
        weights = None if weights is None else weights.to(device=device, dtype=torch.float32)
        steps = (len(y) + config.batch_size - 1) // config.batch_size
        history = []
        if trained_on is not None:
            self.trained_on = trained_on
        with progress() as bars:
            task = bars.add_task(description, total=config.epochs * steps, status="", unit="steps",
                                 plan=f"{config.epochs} epoch{'s' * (config.epochs != 1)} on {len(y):,} examples "
                                      f"({config.epochs * steps:,} steps)")
            for epoch in range(1, config.epochs + 1):
                plan = [batch.to(device) for batch in epoch_batches(len(y), config, self.shuffle, self.ranks,
                                                                    self.has_batchnorm)]
                bars.update(task, advance=steps - len(plan))
                parts = [batch.tensor_split(self.ranks)[self.rank] for batch in plan]  # this rank's part of each
                totals = [len(batch) if weights is None else weights[batch].sum() for batch in plan]
                for batch, total, xb in zip(parts, totals, batches(x, parts, device)):
                    self.step(xb, y[batch], None if weights is None else weights[batch], total)
                    bars.update(task, advance=1)
                row = self.end_epoch(epoch, description)
                bars.update(task, status=f"epoch {epoch}/{config.epochs} loss {row['train_loss']:.3f}")
                history.append(row)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, self.model)
        return history

    def step(self, xb: torch.Tensor, yb: torch.Tensor, weights: torch.Tensor | None = None, total=None) -> None:
        """One SGD step on the batch (xb, yb), already on the device."""
        self.model.train()
        if self.config.augment == "standard":
            xb = augmentation.standard(xb, self.augment)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp):
            logits = self.trained(xb)
        logits = logits.float() if self.config.amp else logits
        losses = nn.functional.cross_entropy(logits, yb, reduction="none")
        if weights is None:
            loss = losses.mean() if self.ranks == 1 else losses.sum() * (self.ranks / total)
        else:
            weights = weights.to(self.device, torch.float32)
            total = weights.sum() if total is None else total
            loss = (weights * losses).sum() / total * self.ranks  # DDP averages over the ranks
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.backprops += len(yb)
        # accumulated on the device: no host synchronisation inside the epoch
        self._loss += losses.detach().sum()
        self._correct += (logits.argmax(1) == yb).sum()
        self._count += len(yb)

    def end_epoch(self, epoch: int, description: str) -> dict:
        """Step the schedule; the epoch's mean loss and accuracy over the examples trained on (all ranks')."""
        self.scheduler.step()
        summed = torch.stack([self._loss.double().cpu(), self._correct.double().cpu(),
                              torch.tensor(float(self._count), dtype=torch.float64)])
        if self.ranks > 1:  # every rank reports (and checks) the whole epoch
            torch.distributed.all_reduce(summed)
        loss, correct, count = summed.tolist()
        self._loss.zero_(), self._correct.zero_()
        self._count = 0
        if not math.isfinite(loss):
            raise PruneError(f"{description} diverged (loss is NaN or inf at epoch {epoch}); lower --lr and retry",
                             parameters=True)
        count = max(count, 1)
        row = {"epoch": epoch, "train_loss": loss / count, "train_accuracy": int(correct) / count}
        if epoch_lines():  # logs get one line per epoch instead of a live bar
            console.print(f"{description}: epoch {epoch}/{self.config.epochs} loss {row['train_loss']:.4f} "
                          f"accuracy {row['train_accuracy']:.4f} (on {self.trained_on})", highlight=False)
        return row


def epoch_batches(n: int, config: TrainConfig, generator: torch.Generator, ranks: int, has_batchnorm: bool) -> list:
    """One epoch's batches of a fixed set of n: a seeded shuffle cut into ``config.batch_size`` rows.

    A last batch too small to train on (one example per rank with BatchNorm) is left out, so
    the epoch's loss and accuracy are over the examples trained on.
    """
    order = torch.randperm(n, generator=generator)
    plan = [order[start : start + config.batch_size] for start in range(0, n, config.batch_size)]
    if plan and len(plan[-1]) // ranks < (2 if has_batchnorm else 1):  # BatchNorm cannot train on a batch of one
        plan.pop()
    return plan


def fit(model: nn.Module, x, y: torch.Tensor, config: TrainConfig, *, device: torch.device, seed: int,
        weights: torch.Tensor | None = None, world: World | None = None) -> list[dict]:
    """Train ``model`` in place on (x, y) for ``config.epochs`` shuffled epochs; the per-epoch history.

    ``Trainer(model, config, ...).fit(x, y, weights=weights)`` in one call; ``Trainer.fit`` also takes a
    callback after every epoch and the name its progress shows.
    """
    return Trainer(model, config, device=device, seed=seed, world=world).fit(x, y, weights=weights)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: torch.device, batch_size: int = 1024) -> dict:
    """Accuracy and mean cross-entropy of ``model`` (eval mode) on (x, y)."""
    model.to(device).eval()
    total_loss, correct = 0.0, 0
    plan = [slice(start, start + batch_size) for start in range(0, len(y), batch_size)]
    for index, xb in zip(plan, batches(x, plan, device)):
        yb = y[index].to(device)
        logits = model(xb)
        total_loss += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return {"accuracy": correct / len(y), "loss": total_loss / len(y)}


def test_split(model: nn.Module, data, device: torch.device) -> dict:
    """``evaluate`` on ``data``'s test split; accuracy and loss None when it has none."""
    if not len(data.test):
        return {"accuracy": None, "loss": None}
    return evaluate(model, data.test.x, data.test.y, device=device)


@dataclass(frozen=True)
class ModelSpec:
    """The model a run trains: ``name`` (``prune.models.build_model``; None: prune's default for the data)
    with fresh weights drawn from the run's seed, or ``checkpoint``'s weights (``prune.models.load_checkpoint``)."""

    name: str | None = None
    checkpoint: str | Path | None = None

    def build(self, data, seed: int) -> nn.Module:
        """The model for ``data``'s input shape and classes, initialised from ``seed`` (or the checkpoint)."""
        seed_everything(seed)
        model = build_model(self.model_name(data), data.input_shape, data.num_classes)
        if self.checkpoint is not None:
            load_checkpoint(model, self.checkpoint, note=lambda text: console.print(f"[yellow]note:[/] {text}"))
        return model

    def model_name(self, data) -> str:
        return self.name or default_model(data.source, data.input_shape)


@dataclass(frozen=True)
class TrainingRows:
    """What a static run trains on: the rows ``indices`` of the training split, with ``labels`` (the whole split's,
    noisy where label noise applies) and, for weighted training, ``weights``, one per row of ``indices`` (CRAIG's
    gamma: each example's loss weighted by it)."""

    labels: torch.Tensor
    indices: torch.Tensor
    weights: torch.Tensor | None = None


def fit_and_test(data, rows: TrainingRows, config: TrainConfig, model: str | ModelSpec, *, seed: int,
                 device: torch.device, description: str | None = None) -> dict:
    """A fresh ``model`` (a name, or a ``ModelSpec``) trained on ``rows`` of ``data``'s training split and
    tested: test accuracy and loss (None without a test split), size, seconds, history, model.

    ``description`` names the run in its progress and per-epoch lines (default "train MODEL"). The seconds
    (``wall_seconds``) are the training's alone: the model's building, the data's indexing and the
    process's one-off start-up (``warm_up``) happen before the clock starts, the test after it stops."""
    spec = model if isinstance(model, ModelSpec) else ModelSpec(model)
    net = spec.build(data, seed)
    trainer = Trainer(net, config, device=device, seed=seed)
    x, y = data.train.x[rows.indices], rows.labels[rows.indices]
    warm_up(device)
    start = time.perf_counter()
    history = trainer.fit(x, y, weights=rows.weights, description=description or f"train {spec.model_name(data)}",
                          trained_on="the training subset" if len(y) < len(rows.labels) else "the training split")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    test = test_split(net, data, device)
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "train_examples": len(rows.indices),
            "wall_seconds": wall, "history": history, "model": net}
