"""Training on given batches: the SGD stepper a dynamic run and its replay share, and the replay.

``replay`` trains a fresh model on a subset log's batches in their order with the log's model,
seed and optimiser; on CPU it reproduces the run's final weights bit for bit (``state_equal``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from prune.dynamic.subset_log import batches as all_batches
from prune.errors import PruneError
from prune.models import build_model
from prune.training import console, epoch_lines, evaluate, progress, seed_everything


class Trainer:
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
        if epoch_lines():
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
    timings: dict = field(default_factory=dict)  # seconds; kept out of the log so that it is reproducible


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
    trainer = Trainer(model, x, labels, s["lr"], s["momentum"], s["weight_decay"], len(epoch_steps),
                       bool(s["weighted"]), device)
    sequence = all_batches(log)
    weights_of: dict[tuple[int, int], dict[int, float]] = {}
    history, position = [], 0
    with progress() as bars:
        task = bars.add_task(description, total=len(sequence), status="")
        for epoch, count in enumerate(epoch_steps, start=1):
            bars.update(task, status=f"epoch {epoch}/{len(epoch_steps)}")
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
                bars.advance(task)
            history.append(trainer.end_epoch(epoch, len(epoch_steps), description))
    test = evaluate(model, data.test.x, data.test.y, device=device) if len(data.test) else {"accuracy": None, "loss": None}
    return DynamicResult(model, log, history, trainer.backprops, test)


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """True when two models hold bit-identical parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)
