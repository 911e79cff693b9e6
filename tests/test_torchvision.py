"""torchvision models (--model torchvision:NAME): exact closed-form features, checkpoints, augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from prune.augment import standard
from prune.errors import PruneError
from prune.features.closed_form import last_layer_grad, last_layer_hess_diag
from prune.features.extract import extract_features
from prune.models import build_model, load_checkpoint
from prune.training import TrainConfig, Trainer, fit

C = 4


@pytest.mark.parametrize("name, shape", [("resnet18", (1, 16, 16)), ("mobilenet_v3_small", (3, 32, 32))])
def test_closed_form_features_match_autograd(name, shape, tmp_path):
    """G = g (x) h~ and lambda = a (x) h~^2 from prune's split of the model against autograd through
    torchvision's own model with the same weights, w.r.t. its last layer (eval mode, float64)."""
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, num_classes=C).double()
    head = reference.fc if name == "resnet18" else reference.classifier[3]
    with torch.no_grad():
        for _ in range(3):  # BatchNorm statistics of the inputs' scale: fresh ones make embeddings vanish
            reference(torch.randn(16, 3, *shape[1:], dtype=torch.float64))
        head.weight.mul_(20)  # spread the softmax away from uniform
    reference.eval()
    torch.save(reference.state_dict(), tmp_path / "weights.pt")
    model = build_model(f"torchvision:{name}", shape, C).double()
    load_checkpoint(model, tmp_path / "weights.pt")
    x, y = torch.randn(5, *shape, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1])
    f = extract_features(model, x, y, batch_size=2, device="cpu", out_dtype=torch.float64)
    grads, hess = last_layer_grad(f["grad_logit"], f["embedding"]), last_layer_hess_diag(f["hess_logit"], f["embedding"])
    coords = torch.randint(0, grads.shape[1], (4,), generator=torch.Generator().manual_seed(1))
    for i in range(len(y)):
        loss = F.cross_entropy(reference(x[i:i + 1].expand(-1, 3, -1, -1)), y[i:i + 1])
        gw, gb = torch.autograd.grad(loss, (head.weight, head.bias), create_graph=True)
        flat = torch.cat([gw, gb[:, None]], 1).reshape(-1)  # the (c, j) ordering, j = e the bias
        assert torch.allclose(flat, grads[i], rtol=1e-6, atol=1e-9)
        for k in coords.tolist():
            row = torch.autograd.grad(flat[k], (head.weight, head.bias), retain_graph=True)
            assert torch.allclose(torch.cat([row[0], row[1][:, None]], 1).reshape(-1)[k], hess[i, k], rtol=1e-6, atol=1e-9)


def test_checkpoints_in_either_layout_with_shapes_checked(tmp_path, capsys):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=C).eval()
    torchvision_layout = tmp_path / "tv.pt"
    torch.save({"state_dict": reference.state_dict(), "epoch": 3}, torchvision_layout)
    model = build_model("torchvision:resnet18", (3, 16, 16), C)
    load_checkpoint(model, torchvision_layout)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference(x))
    prune_layout = tmp_path / "prune.pt"
    torch.save(model.state_dict(), prune_layout)
    again = build_model("torchvision:resnet18", (3, 16, 16), C)
    load_checkpoint(again, prune_layout)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), reference(x))

    other_classes = build_model("torchvision:resnet18", (3, 16, 16), 7)
    fresh = other_classes.fc.weight.detach().clone()
    load_checkpoint(other_classes, torchvision_layout, note=print)
    assert "head for 4 classes, the data have 7" in capsys.readouterr().out
    assert torch.equal(other_classes.fc.weight, fresh)
    assert torch.equal(other_classes.body.conv1.weight, reference.conv1.weight)

    with pytest.raises(PruneError, match="does not fit this model: it lacks body.layer1.2.conv1.weight"):
        load_checkpoint(build_model("torchvision:resnet34", (3, 16, 16), C), torchvision_layout)
    small_stem = torchvision.models.resnet18(num_classes=C)
    small_stem.conv1 = torch.nn.Conv2d(3, 64, 3, bias=False)
    torch.save(small_stem.state_dict(), tmp_path / "stem.pt")
    with pytest.raises(PruneError, match=r"body.conv1.weight has shape \(64, 3, 3, 3\), the model needs \(64, 3, 7, 7\)"):
        load_checkpoint(build_model("torchvision:resnet18", (3, 16, 16), C), tmp_path / "stem.pt")
    torch.save({"model": reference}, tmp_path / "pickled.pt")  # a whole module: not weights only
    with pytest.raises(PruneError, match="holds more than weights"):
        load_checkpoint(model, tmp_path / "pickled.pt")


def test_two_epochs_see_different_crops_and_features_never_do():
    """Warm-up with --augment standard on copies of one image: every training step sees another crop
    of it, epoch after epoch, while the feature passes after each epoch see the image itself."""
    image = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8) / 64
    x, y = image.repeat(8, 1, 1, 1), torch.arange(8) % 2
    model = build_model("lenet", (1, 8, 8), 2)
    seen = {True: [], False: []}
    model.body.register_forward_pre_hook(lambda module, args: seen[module.training].append(args[0].clone()))

    def features_pass(epoch, net):
        extract_features(net, x, y, batch_size=8, device="cpu")

    Trainer(model, TrainConfig(epochs=2, batch_size=8, augment="standard"), device=torch.device("cpu"), seed=0).fit(
        x, y, on_epoch_end=features_pass)
    first, second = seen[True]
    assert not torch.equal(first, second)  # the two epochs' crops differ
    assert len({tuple(crop.flatten().tolist()) for crop in torch.cat([first, second])}) > 4
    assert all(torch.equal(batch, x) for batch in seen[False]) and len(seen[False]) == 2
    crops = standard(image.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    assert any(torch.equal(c, image[0]) for c in crops) and any(torch.equal(c, image[0].flip(2)) for c in crops)


def test_amp_keeps_the_head_in_float32_and_needs_cuda(tmp_path):
    """--amp: the body under bfloat16 autocast (here on the CPU, which the library allows), the head
    and the closed forms in float32 on that embedding; the command line refuses it without CUDA."""
    from typer.testing import CliRunner

    from prune.cli import app
    from prune.features.closed_form import logit_quantities

    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", (3, 16, 16), C).eval()
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    mixed = extract_features(model, x, y, batch_size=3, device="cpu", amp=True)
    full = extract_features(model, x, y, batch_size=3, device="cpu")
    assert mixed["embedding"].dtype == torch.float32 and not torch.equal(mixed["embedding"], full["embedding"])
    assert torch.allclose(mixed["embedding"], full["embedding"], rtol=0.05, atol=0.05)
    with torch.no_grad():
        g, a, loss = logit_quantities(model.fc(mixed["embedding"]), y)
    assert torch.equal(mixed["grad_logit"], g) and torch.equal(mixed["hess_logit"], a)
    fit(model, x, y, TrainConfig(epochs=1, batch_size=3, amp=True), device=torch.device("cpu"), seed=0)
    assert model.fc.weight.dtype == torch.float32
    result = CliRunner().invoke(app, ["train", "--amp", "--device", "cpu", "--epochs", "1"])
    assert result.exit_code == 2 and "--amp (mixed precision) needs a CUDA device" in result.output
