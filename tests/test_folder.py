"""Image folders (folder:PATH): listing, decoding, bad files, and features -> select -> train -> filter
through the CLI with a torchvision model and a checkpoint saved by an earlier step."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli import fails, run
from prune.data import load_dataset
from prune.data.folder import files_fingerprint
from prune.errors import PruneError
from prune.manifest import Manifest
from prune.models import build_model, load_checkpoint


def write_tree(root, n_train=300, n_test=100):
    """scikit-learn digits as 8 x 8 grey PNGs: root/train/digit-<y>/<i>.png and root/test/..."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)
    for side, rows in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        for i in rows:
            path = root / side / f"digit-{digits.target[i]}" / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(path)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("images") / "digits")


def test_classes_files_and_record(tree):
    data = load_dataset(f"folder:{tree}")
    assert data.train.x.shape == (300, 3, 8, 8) and data.test.x.shape == (100, 3, 8, 8)
    record = data.record()
    assert record["classes"] == [f"digit-{c}" for c in range(10)]  # sorted folder names, as torchvision
    files = sorted((tree / "train").glob("*/*.png"))
    assert data.train.y.tolist() == [int(p.parent.name[-1]) for p in files]
    assert record["files_fingerprint"] == files_fingerprint(p.relative_to(tree / "train").as_posix() for p in files)
    assert load_dataset(f"folder:{tree}", image_size=5).train.x.shape == (300, 3, 5, 5)
    flat = load_dataset(f"folder:{tree / 'test'}")  # class folders directly: nothing held out
    assert flat.record()["num_examples"] == 100 and len(flat.test) == 0
    assert data.eval_split == "test" and flat.eval_split is None  # what prune train --metrics names


def test_bad_images_are_named_or_skipped_and_recorded(tmp_path):
    root = write_tree(tmp_path / "t", 40, 0)
    bad = root / "train" / "digit-3" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(PruneError, match=f"cannot read image {bad}.*--skip-bad"):
        load_dataset(f"folder:{root}")
    data = load_dataset(f"folder:{root}", skip_bad=True)
    assert len(data.train) == 40 and data.record()["skipped"] == ["digit-3/broken.png"]
    Image.new("L", (9, 8)).save(root / "train" / "digit-1" / "wide.png")
    with pytest.raises(PruneError, match="images differ in size.*wide.png is 9 x 8.*--image-size"):
        load_dataset(f"folder:{root}", skip_bad=True)


def test_features_select_train_filter_with_torchvision_and_checkpoint(tree, tmp_path):
    data, model = ["--dataset", f"folder:{tree}", "--image-size", "16"], ["--model", "torchvision:resnet18"]
    checkpoint, store, manifest = tmp_path / "resnet18.pt", tmp_path / "f.h5", tmp_path / "m.json"
    run("train", *data, *model, "--epochs", "1", "--save-model", checkpoint)
    run("features", *data, *model, "--checkpoint", checkpoint, "--warmup-epochs", "0", "--posterior-samples", "1",
        "--out", store)
    # --warmup-epochs 0: the features are the checkpoint's, as it is
    net = build_model("torchvision:resnet18", (3, 16, 16), 10)
    load_checkpoint(net, checkpoint)
    with torch.no_grad(), h5py.File(store) as f:
        x = load_dataset(f"folder:{tree}", image_size=16).train.x[:8].to("cpu")
        assert torch.allclose(torch.from_numpy(f["embedding"][:8, 0]), net.eval().embed(x), atol=1e-5)
    run("select", "--features", store, "--method", "craig", "--drop-hard", "0", "--fraction", "0.2", "--out", manifest)
    chosen = Manifest.load(manifest)
    assert chosen.dataset["image_size"] == 16 and chosen.dataset["files_fingerprint"].startswith("sha256:")
    assert chosen.model["features"]["checkpoint"]["sha256"] and chosen.model["features"]["model"] == "torchvision:resnet18"
    metrics = tmp_path / "metrics.json"
    run("train", "--manifest", manifest, "--augment", "standard", "--epochs", "1", "--metrics", metrics)
    result = json.loads(metrics.read_text())
    assert result["augment"] == "standard" and result["train_examples"] == 60
    assert result["model"] == "torchvision:resnet18"  # from the manifest

    out = tmp_path / "pruned"
    run("filter", "--manifest", manifest, "--out", out, "--link")
    train_files = sorted((tree / "train").glob("*/*.png"))
    kept = sorted(p.relative_to(out / "train") for p in (out / "train").glob("*/*.png"))
    assert kept == [train_files[i].relative_to(tree / "train") for i in chosen.indices]
    assert os.path.samefile(out / "train" / kept[0], tree / "train" / kept[0])  # a hard link
    assert len(list((out / "test").glob("*/*.png"))) == 100
    assert len(load_dataset(f"folder:{out}").train) == 60
    assert "already exists" in fails("filter", "--manifest", manifest, "--out", out)
    run("filter", "--manifest", manifest, "--out", out, "--overwrite")
    assert "overlaps the input" in fails("filter", "--manifest", manifest, "--out", tree / "test", "--overwrite")
    (tmp_path / "mine").mkdir()
    assert "did not write" in fails("filter", "--manifest", manifest, "--out", tmp_path / "mine", "--overwrite")

    # a renamed file: the manifest's positions would pick other images
    moved = tmp_path / "moved"
    shutil.copytree(tree, moved)
    first = sorted((moved / "train" / "digit-0").iterdir())[0]
    first.rename(first.with_name("zz.png"))
    assert "files differ" in fails("train", "--manifest", manifest, "--dataset", f"folder:{moved}", "--epochs", "1")
    assert "files differ" in fails("filter", "--manifest", manifest, "--dataset", f"folder:{moved}", "--out", tmp_path / "o")
    assert "files differ" in fails("inspect", manifest, "--dataset", f"folder:{moved}")
    assert "files differ" in fails("select", "--features", store, "--dataset", f"folder:{moved}", "--image-size", "16",
                                   "--out", tmp_path / "m2.json")


@pytest.mark.parametrize("workers", [False, True])
def test_streamed_images_train_and_extract_as_the_decoded_tensor(tree, monkeypatch, workers):
    """folder: splits stay on disk (indexing selects files, nothing is decoded); training and feature
    passes read them batch by batch (in worker processes, too) and give the same weights and
    features, bit for bit, as the decoded tensor."""
    import prune.data.streaming as streaming
    from prune.data.streaming import LazyImages
    from prune.features import extract_features
    from prune.training import TrainConfig, fit

    if workers:
        monkeypatch.setattr(streaming, "MIN_FOR_WORKERS", 1)
    data = load_dataset(f"folder:{tree}")
    files = data.train.x[torch.arange(0, 300, 3)]
    assert isinstance(files, LazyImages) and files.shape == (100, 3, 8, 8)
    dense = files.to("cpu")
    labels = data.train.y[::3]
    models = []
    for x in (files, dense):
        torch.manual_seed(0)
        model = build_model("lenet", (3, 8, 8), 10)
        fit(model, x, labels, TrainConfig(epochs=2, batch_size=32, augment="standard"), device=torch.device("cpu"),
            seed=0)
        models.append((model, extract_features(model, x, labels, batch_size=64, device="cpu")))
    (streamed, features), (reference, expected) = models
    assert all(torch.equal(a, b) for a, b in zip(streamed.state_dict().values(), reference.state_dict().values()))
    assert all(torch.equal(features[k], expected[k]) for k in expected)
