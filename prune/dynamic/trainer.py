"""Training on given batches: the SGD trainer a dynamic run and its replay share, and the replay.

``replay`` trains a fresh model on a subset log's batches in their order with the log's model,
seed and optimiser; on CPU it reproduces the run's final weights bit for bit (``state_equal``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from prune.dynamic.subset_log import batches as all_batches
from prune.errors import PruneError
from prune.models import build_model
from prune.training import Trainer, TrainConfig, evaluate, progress, seed_everything


def sgd_trainer(model: nn.Module, settings: dict, epochs: int, device, seed: int) -> Trainer:
    """The ``prune.training.Trainer`` of a dynamic run or its replay: its SGD settings, cosine over ``epochs``."""
    config = TrainConfig(epochs=epochs, batch_size=int(settings["batch_size"]), lr=settings["lr"],
                         momentum=settings["momentum"], weight_decay=settings["weight_decay"])
    return Trainer(model, config, device=device, seed=seed)


def train_batch(trainer: Trainer, x, labels: torch.Tensor, batch: torch.Tensor, weights: torch.Tensor | None) -> None:
    """One step on the examples ``batch`` of (x, labels): a coreset, or a part of one."""
    if len(batch) < 2 and trainer.has_batchnorm:
        raise PruneError("a batch of one example cannot train a model with BatchNorm; use a larger --fraction",
                         parameters=True)
    trainer.step(x[batch].to(trainer.device), labels[batch].to(trainer.device), weights)


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
    trainer = sgd_trainer(model, s, len(epoch_steps), device, int(s["seed"]))
    sequence = all_batches(log)
    weights_of: dict[tuple[int, int], dict[int, float]] = {}
    history, position = [], 0
    with progress() as bars:
        task = bars.add_task(description, total=len(sequence), status="", unit="steps")
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
                train_batch(trainer, x, labels, torch.tensor(batch, dtype=torch.int64), weights)
                bars.advance(task)
            history.append(trainer.end_epoch(epoch, description))
    test = evaluate(model, data.test.x, data.test.y, device=device) if len(data.test) else {"accuracy": None, "loss": None}
    return DynamicResult(model, log, history, trainer.backprops, test)


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """True when two models hold bit-identical parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)
