"""Hugging Face datasets: hf:PATH as a source, Manifest.apply, prune filter, the Python API.

Real data: a Fashion-MNIST slice (the ``fashion_slice`` fixture) saved with ``save_to_disk``
as PIL images, and as precomputed vectors (a fixed random projection of the pixels).
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk  # noqa: E402
from PIL import Image  # noqa: E402

import prune  # noqa: E402
from tests.cli import fails, run  # noqa: E402
from prune.data import label_fingerprint, load_dataset  # noqa: E402
from prune.data.streaming import LazyImages  # noqa: E402
from prune.errors import PruneError  # noqa: E402
from prune.manifest import Manifest  # noqa: E402

FAST = ["--warmup-epochs", "2"]
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
NTRAIN, NTEST = 1000, 200  # of the slice's 2000 / 500: enough for real classes, quick to warm up on


@pytest.fixture(scope="module")
def arrays(fashion_slice):
    with np.load(fashion_slice) as f:
        return (f["x_train"][:NTRAIN], f["y_train"][:NTRAIN].astype(np.int64),
                f["x_test"][:NTEST], f["y_test"][:NTEST].astype(np.int64))


def image_split(x, y) -> Dataset:
    features = Features({"image": datasets.Image(), "label": ClassLabel(names=NAMES)})
    return Dataset.from_dict({"image": [Image.fromarray(a) for a in x], "label": y.tolist()}, features=features)


@pytest.fixture(scope="module")
def images(arrays, tmp_path_factory):
    """A DatasetDict (train, test) of PIL images with ClassLabel labels, saved to disk."""
    xtr, ytr, xte, yte = arrays
    path = tmp_path_factory.mktemp("hf") / "fashion-images"
    DatasetDict({"train": image_split(xtr, ytr), "test": image_split(xte, yte)}).save_to_disk(str(path))
    return path


def embed(x: np.ndarray) -> np.ndarray:
    projection = np.random.default_rng(0).standard_normal((784, 32)).astype(np.float32) / 28
    return (x.reshape(len(x), -1).astype(np.float32) / 255) @ projection


@pytest.fixture(scope="module")
def vectors(arrays, tmp_path_factory):
    """A single Dataset of 32-dim embeddings with plain int64 labels in column 'target'."""
    xtr, ytr, _, _ = arrays
    path = tmp_path_factory.mktemp("hf") / "fashion-vectors"
    ds = Dataset.from_dict({"embedding": embed(xtr), "target": ytr},
                           features=Features({"embedding": datasets.List(Value("float32")), "target": Value("int64")}))
    ds.save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def random_manifest(vectors, tmp_path_factory):
    out = tmp_path_factory.mktemp("manifests") / "vectors-random.json"
    run("select", "--dataset", f"hf:{vectors}", "--feature-column", "embedding", "--label-column", "target",
        "--method", "random", "--fraction", "0.1", "--out", out)
    return out


def rows(ds: Dataset, column: str) -> np.ndarray:
    return np.stack([np.asarray(v) for v in ds.with_format("numpy")[column]])


# --------------------------------------------------------------------------- source


def write_idx(folder, xtr, ytr, xte, yte):
    folder.mkdir(parents=True, exist_ok=True)
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    blobs = (struct.pack(">IIII", 2051, len(xtr), 28, 28) + xtr.astype(np.uint8).tobytes(),
             struct.pack(">II", 2049, len(ytr)) + ytr.astype(np.uint8).tobytes(),
             struct.pack(">IIII", 2051, len(xte), 28, 28) + xte.astype(np.uint8).tobytes(),
             struct.pack(">II", 2049, len(yte)) + yte.astype(np.uint8).tobytes())
    for name, blob in zip(names, blobs):
        (folder / f"{name}.gz").write_bytes(gzip.compress(blob, compresslevel=1))
    return folder


def test_idx_npz_and_hf_give_one_fingerprint_and_the_same_tensors(arrays, images, tmp_path):
    xtr, ytr, xte, yte = arrays
    from_idx = load_dataset("fashion-mnist", str(write_idx(tmp_path / "idx", xtr, ytr, xte, yte)))
    np.savez(tmp_path / "slice.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    from_npz = load_dataset(f"npz:{tmp_path / 'slice.npz'}")
    from_hf = load_dataset(f"hf:{images}")
    assert from_idx.fingerprint == from_npz.fingerprint == from_hf.fingerprint == label_fingerprint(ytr)
    assert from_hf.source == f"hf:{images.resolve()}" and from_hf.split == "train"
    assert from_hf.columns == {"label": "label", "image": "image"}
    assert from_hf.num_classes == 10 and from_hf.input_shape == (1, 28, 28)
    assert isinstance(from_hf.train.x, LazyImages)  # streamed: decoded batch by batch
    for other in (from_idx, from_npz):
        # the streamed statistics are summed in float64, the in-memory ones in float32
        torch.testing.assert_close(from_hf.train.x.to("cpu"), other.train.x, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(from_hf.test.x.to("cpu"), other.test.x, rtol=1e-5, atol=1e-5)
        assert torch.equal(from_hf.test.y, other.test.y)
        assert from_hf.mean == pytest.approx(other.mean, rel=1e-6) and from_hf.std == pytest.approx(other.std, rel=1e-6)
    record = from_hf.record()
    assert record["class_counts"] == np.bincount(ytr, minlength=10).tolist() and record["columns"]["image"] == "image"


def test_vectors_give_an_mlp_and_no_test_split(vectors, arrays):
    data = load_dataset(f"hf:{vectors}", feature_column="embedding", label_column="target")
    assert data.input_shape == (32,) and len(data.test) == 0 and data.num_classes == 10
    torch.testing.assert_close(data.train.x.mean(0), torch.zeros(32), atol=1e-4, rtol=0)  # train statistics
    assert torch.equal(data.train.y, torch.from_numpy(arrays[1]))
    from prune.models import default_model

    assert default_model(data.source, data.input_shape) == "mlp"


def test_missing_columns_and_splits_are_named(images, vectors):
    with pytest.raises(PruneError, match=r"no column 'picture' \(its columns: image, label\)"):
        load_dataset(f"hf:{images}", image_column="picture")
    with pytest.raises(PruneError, match=r"no column 'label' \(its columns: embedding, target\).*--label-column"):
        load_dataset(f"hf:{vectors}", feature_column="embedding")
    with pytest.raises(PruneError, match=r"no column 'image'.*--feature-column"):
        load_dataset(f"hf:{vectors}", label_column="target")
    with pytest.raises(PruneError, match=r"no split 'validation' \(its splits: train, test\)"):
        load_dataset(f"hf:{images}", split="validation")
    with pytest.raises(PruneError, match="single Dataset"):
        load_dataset(f"hf:{vectors}", split="test", feature_column="embedding", label_column="target")
    with pytest.raises(PruneError, match="only to hf: datasets"):
        load_dataset("digits", image_column="image")
    out = fails("select", "--dataset", f"hf:{images}", "--image-column", "pixels", "--method", "random")
    assert "no column 'pixels'" in out and "image, label" in out


# --------------------------------------------------------------------------- select, filter, apply


def test_select_lcmat_then_filter_keeps_rows_labels_and_order(images, tmp_path):
    manifest_path = tmp_path / "hf-lcmat-5.json"
    run("select", "--dataset", f"hf:{images}", "--image-column", "image", "--label-column", "label",
        "--method", "lcmat", "--fraction", "0.05", *FAST, "--out", manifest_path)
    manifest = Manifest.load(manifest_path)
    assert manifest.dataset["source"] == f"hf:{images.resolve()}" and manifest.dataset["split"] == "train"
    assert manifest.dataset["columns"] == {"label": "label", "image": "image"}
    assert len(manifest) == sum(manifest.per_class) == 50 and manifest.model["features"]["model"] == "lenet"

    out = tmp_path / "pruned"
    assert "wrote 50 of 1000 rows" in " ".join(run("filter", "--manifest", manifest_path, "--out", out).split())
    source, written = load_from_disk(str(images)), load_from_disk(str(out))
    expected = source["train"].select(manifest.indices)
    assert isinstance(written, DatasetDict) and list(written) == ["train", "test"]
    assert written["train"].features == source["train"].features
    assert written["train"]["label"][:] == expected["label"][:]
    np.testing.assert_array_equal(rows(written["train"], "image"), rows(expected, "image"))
    assert len(written["test"]) == len(source["test"])  # other splits are copied as they are
    assert not list(tmp_path.glob(".pruned*"))  # no temporary folder left behind

    assert "already exists" in fails("filter", "--manifest", manifest_path, "--out", out)
    run("filter", "--manifest", manifest_path, "--out", out, "--overwrite")
    assert len(load_from_disk(str(out))["train"]) == 50
    assert "overlaps" in fails("filter", "--manifest", manifest_path, "--out", images / "sub", "--overwrite")
    assert "matches" in run("inspect", manifest_path, "--dataset", f"hf:{images}")


def test_apply_checks_size_labels_and_order(vectors, random_manifest):
    ds = load_from_disk(str(vectors))
    manifest = Manifest.load(random_manifest)
    small = manifest.apply(ds)
    assert small._indices is None  # flattened once
    assert small["target"][:] == ds.select(manifest.indices)["target"][:]
    np.testing.assert_array_equal(rows(small, "embedding"), rows(ds.select(manifest.indices), "embedding"))
    assert prune.Manifest is Manifest

    shuffled = ds.shuffle(seed=0)
    with pytest.raises(PruneError, match="order differs"):
        manifest.apply(shuffled)
    with pytest.warns(UserWarning, match="order differs"):
        forced = manifest.apply(shuffled, force=True)
    assert forced["target"][:] == shuffled.select(manifest.indices)["target"][:]
    relabelled = ds.map(lambda row, i: {"target": (row["target"] + (i == 0)) % 10}, with_indices=True)
    with pytest.raises(PruneError, match="labels differ"):
        manifest.apply(relabelled)
    with pytest.raises(PruneError, match="size differs"):
        manifest.apply(ds.select(range(len(ds) - 1)))
    with pytest.raises(PruneError, match="no column 'label'"):
        manifest.apply(ds.rename_column("target", "y"), label_column="label")


def test_filter_refuses_other_data_unless_forced(vectors, random_manifest, tmp_path):
    shuffled = tmp_path / "shuffled"
    load_from_disk(str(vectors)).shuffle(seed=1).flatten_indices().save_to_disk(str(shuffled))
    assert "order differs" in fails("filter", "--manifest", random_manifest, "--dataset", f"hf:{shuffled}",
                                    "--out", tmp_path / "a")
    assert not (tmp_path / "a").exists()
    out = " ".join(run("filter", "--manifest", random_manifest, "--dataset", f"hf:{shuffled}",
                       "--out", tmp_path / "b", "--force").split())
    assert "warning" in out and "order differs" in out
    assert len(load_from_disk(str(tmp_path / "b"))) == len(Manifest.load(random_manifest))
    assert "hf:PATH" in fails("filter", "--manifest", random_manifest, "--dataset", "digits", "--out", tmp_path / "c")


def test_weight_column_holds_gamma(vectors, random_manifest, tmp_path):
    out = tmp_path / "weighted"
    before = sorted(vectors.iterdir())
    run("filter", "--manifest", random_manifest, "--out", out, "--weight-column")
    assert sorted(vectors.iterdir()) == before  # no cache files written into the source folder
    manifest, written = Manifest.load(random_manifest), load_from_disk(str(out))
    assert written.column_names == ["embedding", "target", "prune_weight"]
    np.testing.assert_allclose(written["prune_weight"][:], manifest.weights)
    assert written["target"][:] == load_from_disk(str(vectors)).select(manifest.indices)["target"][:]


def test_datasetdict_split_is_recorded_and_filtered(arrays, tmp_path):
    xtr, ytr, _, _ = arrays
    path = tmp_path / "dict"
    features = Features({"emb": datasets.List(Value("float32")), "label": Value("int64")})
    parts = {"a": Dataset.from_dict({"emb": embed(xtr[:400]), "label": ytr[:400]}, features=features),
             "b": Dataset.from_dict({"emb": embed(xtr[400:]), "label": ytr[400:]}, features=features)}
    DatasetDict(parts).save_to_disk(str(path))
    assert "no split 'train' (its splits: a, b); pass --split" in fails(
        "select", "--dataset", f"hf:{path}", "--feature-column", "emb", "--method", "random")
    manifest_path = tmp_path / "b.json"
    run("select", "--dataset", f"hf:{path}", "--split", "b", "--feature-column", "emb", "--method", "random",
        "--count", "60", "--out", manifest_path)
    manifest = Manifest.load(manifest_path)
    assert manifest.dataset["split"] == "b" and manifest.dataset["num_examples"] == 600
    run("filter", "--manifest", manifest_path, "--out", tmp_path / "out")  # the manifest's split by default
    written = load_from_disk(str(tmp_path / "out"))
    assert len(written["b"]) == 60 and len(written["a"]) == 400
    assert written["b"]["label"][:] == parts["b"].select(manifest.indices)["label"][:]
    assert manifest.apply(load_from_disk(str(path)))["label"][:] == written["b"]["label"][:]
    assert "order differs" not in fails("filter", "--manifest", manifest_path, "--split", "a",
                                        "--out", tmp_path / "out-a")  # 400 rows: the size differs


# --------------------------------------------------------------------------- Python API and train


def test_python_api_matches_the_cli_and_train_uses_the_recorded_columns(vectors, tmp_path):
    cli_path = tmp_path / "cli.json"
    run("select", "--dataset", f"hf:{vectors}", "--feature-column", "embedding", "--label-column", "target",
        "--method", "craig", "--fraction", "0.1", *FAST, "--out", cli_path)
    manifest = prune.select_coreset(f"hf:{vectors}", "craig", fraction=0.1, feature_column="embedding",
                                    label_column="target", warmup_epochs=2)
    assert manifest.to_dict() == Manifest.load(cli_path).to_dict()
    assert manifest.model["features"]["model"] == "mlp"
    with pytest.raises(PruneError, match="unknown option"):
        prune.select_coreset("digits", "random", nonsense=1)
    store, two_step = tmp_path / "vectors.h5", tmp_path / "two-step.json"  # the store keeps split and columns
    run("features", "--dataset", f"hf:{vectors}", "--feature-column", "embedding", "--label-column", "target",
        *FAST, "--out", store)
    run("select", "--features", store, "--method", "craig", "--fraction", "0.1", "--out", two_step)
    assert two_step.read_bytes() == cli_path.read_bytes()

    metrics = tmp_path / "metrics.json"
    out = run("train", "--manifest", cli_path, "--epochs", "2", "--metrics", metrics)
    assert "no test or validation split" in " ".join(out.split())
    import json

    result = json.loads(metrics.read_text())
    assert result["train_examples"] == len(manifest) and result["test_accuracy"] is None


def test_a_validation_split_is_held_out_when_there_is_no_test(arrays, tmp_path):
    xtr, ytr, xte, yte = arrays
    path = tmp_path / "train-validation"
    features = Features({"emb": datasets.List(Value("float32")), "label": Value("int64")})
    DatasetDict({"train": Dataset.from_dict({"emb": embed(xtr), "label": ytr}, features=features),
                 "validation": Dataset.from_dict({"emb": embed(xte), "label": yte}, features=features),
                 "extra": Dataset.from_dict({"emb": embed(xte[:50]), "label": yte[:50]}, features=features),
                 }).save_to_disk(str(path))
    data = load_dataset(f"hf:{path}", feature_column="emb")
    assert data.eval_split == "validation" and torch.equal(data.test.y, torch.from_numpy(yte))
    assert data.record() == load_dataset(f"hf:{path}", feature_column="emb", eval_split="extra").record()
    assert len(load_dataset(f"hf:{path}", feature_column="emb", eval_split="extra").test) == 50
    with pytest.raises(PruneError, match="--eval-split train is the split selected from"):
        load_dataset(f"hf:{path}", feature_column="emb", eval_split="train")
    with pytest.raises(PruneError, match=r"no split 'nope' \(its splits: train, validation, extra\); check --eval-split"):
        load_dataset(f"hf:{path}", feature_column="emb", eval_split="nope")
    metrics = tmp_path / "metrics.json"
    out = run("train", "--dataset", f"hf:{path}", "--feature-column", "emb", "--epochs", "1", "--metrics", metrics)
    assert "test accuracy on split 'validation' (200 examples)" in " ".join(out.split())
    import json

    result = json.loads(metrics.read_text())
    assert result["eval_split"] == "validation" and result["test_accuracy"] is not None
    assert "applies only to hf: datasets" in fails("train", "--eval-split", "validation", "--epochs", "1")


def test_filter_quiet_silences_the_datasets_progress_bars(tmp_path, monkeypatch):
    """--quiet turns the datasets library's bars off while filter writes, and back on afterwards;
    without it they are left as the user set them."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny"
    Dataset.from_dict({"embedding": rng.standard_normal((200, 8)).astype(np.float32).tolist(),
                       "label": (np.arange(200) % 4).tolist()}).save_to_disk(str(path))
    manifest = tmp_path / "m.json"
    run("select", "--dataset", f"hf:{path}", "--feature-column", "embedding", "--method", "random",
        "--fraction", "0.1", "--out", manifest)
    seen = []
    real = Dataset.save_to_disk

    def save(self, *args, **kwargs):
        seen.append(datasets.is_progress_bar_enabled())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_to_disk", save)
    was = datasets.is_progress_bar_enabled()
    try:
        datasets.enable_progress_bars()
        quiet = run("filter", "--manifest", manifest, "--out", tmp_path / "quiet", "--quiet")
        assert datasets.is_progress_bar_enabled()
        shown = run("filter", "--manifest", manifest, "--out", tmp_path / "shown")
        datasets.disable_progress_bars()
        run("filter", "--manifest", manifest, "--out", tmp_path / "off", "--quiet")
        assert not datasets.is_progress_bar_enabled()
    finally:
        (datasets.enable_progress_bars if was else datasets.disable_progress_bars)()
    assert seen == [False, True, False]
    assert "Saving the dataset" not in quiet and "Saving the dataset" in shown
    assert "wrote 20 of 200 rows" in " ".join(quiet.split())
    assert len(load_from_disk(str(tmp_path / "quiet"))) == 20


def test_source_options_as_an_object_or_keywords(tmp_path):
    """load_dataset takes the hf:/folder: options as one SourceOptions or as its keywords (not both);
    write_filtered takes the split and label column as SourceOptions and refuses the others."""
    from prune.data.hf_filter import write_filtered
    from prune.data.sources import SourceOptions

    rng = np.random.default_rng(0)
    path = tmp_path / "tiny"
    Dataset.from_dict({"emb": rng.standard_normal((120, 4)).astype(np.float32).tolist(),
                       "y": (np.arange(120) % 3).tolist()}).save_to_disk(str(path))
    options = SourceOptions(feature_column="emb", label_column="y")
    data = load_dataset(f"hf:{path}", options=options)
    assert data.record() == load_dataset(f"hf:{path}", feature_column="emb", label_column="y").record()
    assert len(data.train) == 120 and data.num_classes == 3
    with pytest.raises(TypeError, match="not both"):
        load_dataset(f"hf:{path}", options=options, split="train")
    with pytest.raises(PruneError, match="--feature-column applies only to hf: datasets"):
        load_dataset("digits", options=SourceOptions(feature_column="emb"))
    with pytest.raises(PruneError, match="--image-size and --skip-bad apply only to folder:"):
        load_dataset(f"hf:{path}", options=SourceOptions(image_size=8))
    manifest = tmp_path / "m.json"
    run("select", "--dataset", f"hf:{path}", "--feature-column", "emb", "--label-column", "y", "--method", "random",
        "--fraction", "0.1", "--out", manifest)
    with pytest.raises(PruneError, match="no other source options"):
        write_filtered(Manifest.load(manifest), f"hf:{path}", tmp_path / "out", options=SourceOptions(image_size=8))
    written, rows, _ = write_filtered(Manifest.load(manifest), f"hf:{path}", tmp_path / "out",
                                      options=SourceOptions(label_column="y"))
    assert rows == len(Manifest.load(manifest)) and load_from_disk(str(written))["y"][:] == \
        [int(v) for v in (np.arange(120) % 3)[Manifest.load(manifest).indices]]
