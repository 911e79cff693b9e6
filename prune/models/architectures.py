"""Classifiers whose last layer is a linear head over a cheap-to-read embedding.

Every model (and ``torchvision:NAME``, ``prune.models.torchvision_models``) has ``embed(x) -> h`` (the penultimate embedding, n x e) and ``fc``, an
``nn.Linear(e, C)``, with ``model(x) == model.fc(model.embed(x))``. The feature code reads
``h`` and the logits from one forward pass, so per-sample last-layer gradients and Hessians
come in closed form (methods.md, "Per-sample features").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prune.errors import PruneError
from prune.models.torchvision_models import PREFIX as TORCHVISION, build_torchvision

MODELS = ("mlp", "lenet", "resnet20", "resnet18")


class Classifier(nn.Module):
    """A backbone ``embed`` followed by the linear head ``fc``."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


class MLP(Classifier):
    """Two hidden ReLU layers over the flattened input (no BatchNorm)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
        )
        self.fc = nn.Linear(hidden // 2, num_classes)

    def embed(self, x):
        return self.body(x)


class LeNet(Classifier):
    """LeNet-5 with BatchNorm after each convolution; any input size (adaptive pooling)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(6, 16, 5, padding=2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(5),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
        )
        self.fc = nn.Linear(84, num_classes)

    def embed(self, x):
        return self.body(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(Classifier):
    """CIFAR-style ResNet: 3x3 stem, no stem pooling, global average pool, linear head."""

    def __init__(self, in_channels: int, num_classes: int, widths: list[int], blocks: list[int]):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        layers, cin = [], widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks)):
            for b in range(count):
                layers.append(BasicBlock(cin, width, 2 if (b == 0 and i > 0) else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def embed(self, x):
        return self.pool(self.layers(self.stem(x)))


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A fresh model for inputs of ``input_shape`` (C x H x W images or D-vectors).

    ``name`` is one of ``MODELS`` or ``torchvision:NAME`` (``prune.models.torchvision_models``).
    """
    if name.startswith(TORCHVISION):
        return build_torchvision(name, input_shape, num_classes)
    image = len(input_shape) == 3
    if name == "mlp":
        return MLP(math.prod(input_shape), num_classes)
    if not image:
        raise PruneError(
            f"model {name!r} needs images, but the data are {input_shape[0]}-dim vectors; "
            "use --model mlp"
        )
    channels = input_shape[0]
    if name == "lenet":
        return LeNet(channels, num_classes)
    if name == "resnet20":
        return ResNet(channels, num_classes, [16, 32, 64], [3, 3, 3])
    if name == "resnet18":
        return ResNet(channels, num_classes, [64, 128, 256, 512], [2, 2, 2, 2])
    raise PruneError(f"unknown --model {name!r}; choose one of: {', '.join(MODELS)}, or torchvision:NAME")


def default_model(source: str, input_shape: tuple[int, ...]) -> str:
    """The model used when ``--model`` is not given: small and CPU-friendly per dataset."""
    if source.startswith("cifar"):
        return "resnet20"
    if len(input_shape) == 3 and min(input_shape[1:]) >= 16:
        return "lenet"
    return "mlp"
