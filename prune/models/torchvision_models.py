"""torchvision's classification models (``--model torchvision:NAME``) as prune classifiers.

The model is built by ``torchvision.models.get_model(NAME, weights=None, num_classes=C)``; its
last ``nn.Linear`` (``fc`` of a ResNet, ``classifier.1`` of a MobileNet, ``heads.head`` of a
ViT, ...) becomes the head ``fc`` and is replaced by ``nn.Identity`` in the body, so
``embed(x)`` is that layer's input. A forward pass on a small random batch checks that nothing
follows the head (the logits are its output), which keeps the closed-form features exact.
Grey images (one channel) are repeated to the three channels the stem expects.
"""

from __future__ import annotations

import torch
from torch import nn

from prune.errors import PruneError

PREFIX = "torchvision:"


def torchvision_names() -> list[str]:
    """The classification models torchvision provides."""
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


class TorchvisionClassifier(nn.Module):
    """A torchvision model split into ``body`` (head replaced by ``nn.Identity``) and the head ``fc``.

    ``head`` is the head's name inside the torchvision model, which its own state dicts use
    (``prune.models.checkpoint`` translates between the two layouts).
    """

    def __init__(self, net: nn.Module, head: str, channels: int):
        super().__init__()
        self.head = head
        self.fc = net.get_submodule(head)
        parent, _, leaf = head.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, leaf, nn.Identity())
        self.body = net
        self.repeat = 3 if channels == 1 else 1

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat > 1:
            x = x.expand(-1, self.repeat, -1, -1)
        h = self.body(x)
        return h.reshape(h.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


def _last_linear(net: nn.Module) -> str | None:
    names = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    return names[-1] if names else None


def build_torchvision(spec: str, input_shape: tuple[int, ...], num_classes: int) -> TorchvisionClassifier:
    """``torchvision:NAME`` for inputs of ``input_shape`` (C x H x W) and ``num_classes`` classes."""
    import torchvision.models

    name = spec[len(PREFIX):].strip()
    if name not in torchvision_names():
        raise PruneError(f"torchvision has no classification model {name!r}; choose one of "
                         "torchvision.models.list_models(module=torchvision.models), e.g. torchvision:resnet18")
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise PruneError(f"{spec} needs images with 1 or 3 channels, but the data are {input_shape}; "
                         "use --model mlp for vectors")
    try:
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except (TypeError, ValueError) as err:
        raise PruneError(f"cannot build {spec} for {num_classes} classes ({err})") from None
    head = _last_linear(net)
    if head is None or net.get_submodule(head).out_features != num_classes:
        raise PruneError(f"{spec} does not end in a linear layer giving the class scores; "
                         "prune needs one (choose another architecture)")
    _check_head_is_last(net, head, spec, input_shape)
    return TorchvisionClassifier(net, head, input_shape[0])


def _check_head_is_last(net: nn.Module, head: str, spec: str, input_shape: tuple[int, ...]) -> None:
    """The model's output must be the head's output (nothing after it), at the data's input size."""
    seen = {}
    hook = net.get_submodule(head).register_forward_hook(lambda module, args, out: seen.setdefault("out", out))
    channels = 3 if input_shape[0] == 1 else input_shape[0]
    x = torch.randn((2, channels, *input_shape[1:]), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            net.eval()
            out = net(x)
    except (RuntimeError, ValueError, AssertionError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PruneError(f"{spec} cannot take images of {input_shape[1]} x {input_shape[2]} pixels ({reason}); "
                         "pass a larger --image-size or choose another model") from None
    finally:
        hook.remove()
        net.train()
    if not isinstance(out, torch.Tensor) or "out" not in seen or not torch.equal(out, seen["out"]):
        raise PruneError(f"{spec}'s output is not the output of its last linear layer {head!r}; prune needs "
                         "a model whose class scores come from that layer (choose another architecture)")
