"""Data loading: digits, IDX (Fashion-)MNIST, npz files, CIFAR error paths, label tools."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from prune.data import (
    DATASETS,
    LoadedData,
    Split,
    flip_labels,
    label_fingerprint,
    load_dataset,
    take,
)
from prune.errors import PruneError
from tests.conftest import FASHION_MISSING, FASHION_ROOT

FASHION_DIR = FASHION_ROOT
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=FASHION_MISSING,
)


# ------------------------------------------------------------------------------------------ helpers


def idx_images(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, xtr, ytr, xte, yte, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    blobs = (idx_images(xtr), idx_labels(ytr), idx_images(xte), idx_labels(yte))
    for name, blob in zip(IDX_NAMES, blobs):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob, compresslevel=1))
        else:
            (folder / name).write_bytes(blob)
    return folder


def random_idx_arrays(seed=0, ntr=50, nte=20):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (ntr, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, ntr).astype(np.uint8),
        rng.integers(0, 256, (nte, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, nte).astype(np.uint8),
    )


def read_real_idx(name: str) -> np.ndarray:
    data = gzip.decompress((FASHION_DIR / f"{name}.gz").read_bytes())
    if "images" in name:
        return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)
    return np.frombuffer(data, np.uint8, offset=8)


def save_npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def good_npz_arrays(shape=(6, 6), ntr=40, nte=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        x_train=rng.integers(0, 256, (ntr, *shape), dtype=np.uint8),
        y_train=np.arange(ntr) % classes,
        x_test=rng.integers(0, 256, (nte, *shape), dtype=np.uint8),
        y_test=np.arange(nte) % classes,
    )


# ------------------------------------------------------------------------------------------- digits


def test_digits_shapes_and_split_sizes():
    data = load_dataset("digits")
    assert isinstance(data, LoadedData)
    assert data.source == "digits"
    assert data.input_shape == (1, 8, 8)
    assert data.num_classes == 10
    assert len(data.train) == 1437 and len(data.test) == 360
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert tuple(data.train.x.shape) == (1437, 1, 8, 8)
    # normalised with the training statistics
    assert abs(data.train.x.mean().item()) < 1e-4
    assert abs(data.train.x.std(unbiased=False).item() - 1) < 1e-4
    assert data.fingerprint == label_fingerprint(data.train.y)


def test_digits_split_is_the_documented_permutation_and_deterministic():
    from sklearn.datasets import load_digits

    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert torch.equal(a.test.x, b.test.x) and a.fingerprint == b.fingerprint

    bunch = load_digits()
    perm = np.random.default_rng(0).permutation(1797)
    assert a.train.y.tolist() == bunch.target[perm[:1437]].tolist()
    assert a.test.y.tolist() == bunch.target[perm[1437:]].tolist()
    raw = a.train.x * a.std[0] + a.mean[0]
    np.testing.assert_allclose(raw.numpy()[:, 0], bunch.images[perm[:1437]], atol=1e-4)


# ----------------------------------------------------------------------------- Fashion-MNIST (real)


@pytest.fixture(scope="module")
def fashion():
    return load_dataset("fashion-mnist", str(FASHION_DIR))


@needs_fashion
def test_fashion_mnist_counts_and_classes(fashion):
    assert fashion.source == "fashion-mnist"
    assert len(fashion.train) == 60000 and len(fashion.test) == 10000
    assert fashion.input_shape == (1, 28, 28) and fashion.num_classes == 10
    assert torch.bincount(fashion.train.y, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(fashion.test.y, minlength=10).tolist() == [1000] * 10
    assert fashion.train.x.dtype == torch.float32


@needs_fashion
def test_fashion_mnist_pixel_statistics(fashion):
    (mean,), (std,) = fashion.mean, fashion.std
    raw = fashion.train.x * std + mean
    assert raw.mean().item() == pytest.approx(72.94, abs=0.01)
    assert raw.min().item() == pytest.approx(0, abs=1e-2)
    assert raw.max().item() == pytest.approx(255, abs=1e-2)
    assert abs(fashion.train.x.mean().item()) < 1e-3
    # the test split uses the training statistics, not its own
    assert fashion.test.x.mean().item() != pytest.approx(0, abs=1e-3)


@needs_fashion
def test_fashion_slice_idx_and_npz_share_a_fingerprint(tmp_path):
    xtr, ytr = read_real_idx(IDX_NAMES[0])[:1000], read_real_idx(IDX_NAMES[1])[:1000]
    xte, yte = read_real_idx(IDX_NAMES[2])[:200], read_real_idx(IDX_NAMES[3])[:200]
    idx_dir = write_idx_set(tmp_path / "idx", xtr, ytr, xte, yte)
    from_idx = load_dataset("fashion-mnist", str(idx_dir))
    npz_path = tmp_path / "slice.npz"
    from_npz = load_dataset(
        save_npz(npz_path, x_train=xtr, y_train=ytr.astype(np.int64), x_test=xte, y_test=yte)
    )
    assert from_idx.fingerprint == from_npz.fingerprint == label_fingerprint(ytr)
    assert from_idx.fingerprint.startswith("sha256:")
    assert torch.equal(from_idx.train.y, from_npz.train.y)
    torch.testing.assert_close(from_idx.train.x, from_npz.train.x)
    torch.testing.assert_close(from_idx.test.x, from_npz.test.x)
    assert from_npz.num_classes == 10


@needs_fashion
def test_fashion_files_are_not_loaded_as_mnist():
    with pytest.raises(PruneError, match="are Fashion-MNIST, not MNIST"):
        load_dataset("mnist", str(FASHION_DIR))


# --------------------------------------------------------------------------- IDX layouts and errors


@pytest.mark.parametrize("layout", ["flat-gz", "flat-raw", "torchvision"])
def test_idx_layouts(tmp_path, layout):
    arrays = random_idx_arrays()
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision" else tmp_path
    write_idx_set(folder, *arrays, gz=layout != "flat-raw")
    data = load_dataset("mnist", str(tmp_path))
    assert data.source == "mnist" and len(data.train) == 50 and len(data.test) == 20
    assert data.train.y.tolist() == arrays[1].tolist()
    raw = data.test.x * data.std[0] + data.mean[0]
    np.testing.assert_allclose(raw[:, 0].numpy(), arrays[2], atol=1e-3)


def test_idx_missing_root_and_files(tmp_path):
    with pytest.raises(PruneError, match="--data-root"):
        load_dataset("fashion-mnist")
    expected = r"no Fashion-MNIST files in .*train-images-idx3-ubyte\.gz.*--download"
    with pytest.raises(PruneError, match=expected):
        load_dataset("fashion-mnist", str(tmp_path))
    with pytest.raises(PruneError, match="no such folder"):
        load_dataset("mnist", str(tmp_path / "absent"))
    write_idx_set(tmp_path, *random_idx_arrays())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(PruneError, match="missing t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", str(tmp_path))


def test_idx_download_uses_torchvision_layout(tmp_path, monkeypatch):
    import torchvision.datasets

    arrays = random_idx_arrays(seed=5)
    calls = []

    class FakeMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            write_idx_set(Path(root) / "MNIST" / "raw", *arrays)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    with pytest.raises(PruneError, match="--download"):
        load_dataset("mnist", str(tmp_path / "dl"))  # never downloads unless asked
    assert calls == []
    data = load_dataset("mnist", str(tmp_path / "dl"), download=True)
    assert calls == [(str(tmp_path / "dl"), True, True)]
    assert data.train.y.tolist() == arrays[1].tolist()
    load_dataset("mnist", str(tmp_path / "dl"), download=True)  # already there: no new download
    assert len(calls) == 1


def test_download_failure_is_a_prune_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, download=False, **kwargs):
        if not download:  # what torchvision does when the files are absent
            raise RuntimeError("Dataset not found or corrupted.")
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(PruneError, match="downloading Fashion-MNIST into .* failed"):
        load_dataset("fashion-mnist", str(tmp_path), download=True)
    with pytest.raises(PruneError, match="downloading CIFAR-10 into .* failed"):
        load_dataset("cifar10", str(tmp_path), download=True)


def test_unreadable_cifar_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"garbage")
    with pytest.raises(PruneError, match="incomplete or corrupt"):
        load_dataset("cifar10", str(folder))  # pointing at the batches folder itself also works


def test_idx_bad_headers(tmp_path):
    xtr, ytr, xte, yte = random_idx_arrays()
    write_idx_set(tmp_path, xtr, ytr, xte, yte)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(struct.pack(">IIII", 2049, 50, 28, 28) + xtr.tobytes()))
    with pytest.raises(PruneError, match="magic number 2049, expected 2051"):
        load_dataset("mnist", str(tmp_path))
    target.write_bytes(gzip.compress(idx_images(xtr)[:-100]))
    with pytest.raises(PruneError, match="truncated"):
        load_dataset("mnist", str(tmp_path))
    target.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 50, 14, 56) + xtr.tobytes()))
    with pytest.raises(PruneError, match="expected 28 x 28"):
        load_dataset("mnist", str(tmp_path))
    target.write_bytes(b"not gzip at all")
    with pytest.raises(PruneError):
        load_dataset("mnist", str(tmp_path))
    target.write_bytes(gzip.compress(idx_images(xtr[:49])))
    with pytest.raises(PruneError, match="49 images but 50 labels"):
        load_dataset("mnist", str(tmp_path))


# ---------------------------------------------------------------------------------------------- CIFAR


def write_cifar10(folder: Path, x_train, y_train, x_test, y_test) -> Path:
    """torchvision's CIFAR-10 layout (pickled batches of N x 3072 uint8 rows) holding these images."""
    import pickle

    folder.mkdir(parents=True)
    parts = np.array_split(np.arange(len(x_train)), 5)
    for name, x, y in [(f"data_batch_{i + 1}", x_train[part], y_train[part]) for i, part in enumerate(parts)] \
            + [("test_batch", x_test, y_test)]:
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
        (folder / name).write_bytes(pickle.dumps({"data": rows, "labels": y.tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return folder


def test_cifar_is_streamed_from_its_uint8_images(fashion_slice, tmp_path, monkeypatch):
    """CIFAR stays uint8 as torchvision reads it and is normalised a batch at a time: the same
    inputs, to float32 rounding, as the in-memory float path, and prune train runs on it."""
    import torchvision.datasets.cifar as cifar

    from prune.data.loaded import from_arrays
    from prune.data.streaming import LazyImages, batches

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)  # the files are not the real ones
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    with np.load(fashion_slice) as f:
        grey = [np.pad(f[key][:n], ((0, 0), (2, 2), (2, 2))) for key, n in (("x_train", 1000), ("x_test", 200))]
        labels = f["y_train"][:1000].astype(np.int64), f["y_test"][:200].astype(np.int64)
    rgb = [np.stack([g, 255 - g, g // 2], axis=-1) for g in grey]  # N x 32 x 32 x 3, three different channels
    write_cifar10(tmp_path / "cifar-10-batches-py", rgb[0], labels[0], rgb[1], labels[1])
    data = load_dataset("cifar10", str(tmp_path))
    dense = from_arrays("cifar10", *(x.transpose(0, 3, 1, 2) for x in rgb[:1]), labels[0],
                        rgb[1].transpose(0, 3, 1, 2), labels[1], 10)
    assert isinstance(data.train.x, LazyImages) and data.train.x.decoder.pixels.dtype == np.uint8
    assert data.input_shape == (3, 32, 32) and len(data.train) == 1000 and len(data.test) == 200
    assert data.mean == pytest.approx(dense.mean, rel=1e-6) and data.std == pytest.approx(dense.std, rel=1e-6)
    torch.testing.assert_close(data.train.x.to("cpu"), dense.train.x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(data.test.x.to("cpu"), dense.test.x, rtol=1e-5, atol=1e-5)
    picked = torch.tensor([7, 3, 999])
    (batch,) = batches(data.train.x, [picked], torch.device("cpu"))
    torch.testing.assert_close(batch, dense.train.x[picked], rtol=1e-5, atol=1e-5)
    assert torch.equal(data.train.y, torch.from_numpy(labels[0]))

    from tests.cli import run

    out = run("train", "--dataset", "cifar10", "--data-root", tmp_path, "--model", "lenet", "--epochs", "1",
              "--metrics", tmp_path / "m.json")
    assert "test accuracy" in out


# ------------------------------------------------------------------------- CIFAR error paths


@pytest.mark.parametrize(
    "name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")]
)
def test_cifar_missing_files(tmp_path, name, folder):
    with pytest.raises(PruneError, match="--data-root"):
        load_dataset(name)
    with pytest.raises(PruneError, match=f"no CIFAR-10+ files in .*{folder}.*--download"):
        load_dataset(name, str(tmp_path))


# ---------------------------------------------------------------------------------------------- npz


def test_npz_grey_images(tmp_path):
    arrays = good_npz_arrays(shape=(6, 7))
    data = load_dataset(save_npz(tmp_path / "grey.npz", **arrays))
    assert data.source == f"npz:{(tmp_path / 'grey.npz').resolve()}"
    assert data.input_shape == (1, 6, 7) and data.num_classes == 3
    assert len(data.train) == 40 and len(data.test) == 12
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert abs(data.train.x.mean().item()) < 1e-5
    raw = data.train.x[:, 0] * data.std[0] + data.mean[0]
    np.testing.assert_allclose(raw.numpy(), arrays["x_train"], atol=1e-3)


def test_npz_colour_images_channels_last(tmp_path):
    arrays = good_npz_arrays(shape=(5, 5, 3))
    arrays["x_train"][..., 2] //= 4  # give the channels different statistics
    data = load_dataset(save_npz(tmp_path / "rgb.npz", **arrays))
    assert data.input_shape == (3, 5, 5)
    assert len(data.mean) == 3 and data.mean[2] < data.mean[0] / 2
    per_channel = data.train.x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(per_channel, torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.train.x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3))
    # channels first in memory: pixel (i, c, h, w) is the file's (i, h, w, c)
    raw = data.train.x[3, 2, 1, 4] * data.std[2] + data.mean[2]
    assert raw.item() == pytest.approx(float(arrays["x_train"][3, 1, 4, 2]), abs=1e-3)


def test_npz_channels_first_images(tmp_path):
    arrays = good_npz_arrays(shape=(3, 8, 9))  # N x C x H x W: last axis 9 is not a channel count
    data = load_dataset(save_npz(tmp_path / "chw.npz", **arrays))
    assert data.input_shape == (3, 8, 9)
    raw = data.train.x[0, 1] * data.std[1] + data.mean[1]
    np.testing.assert_allclose(raw.numpy(), arrays["x_train"][0, 1], atol=1e-3)


def test_npz_feature_vectors(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x_train = rng.normal(5.0, 3.0, (60, 4)).astype(np.float64)
    x_train[:, 3] = 2.0  # a constant feature must not produce NaN
    x_test = rng.normal(5.0, 3.0, (10, 4))
    path = save_npz(
        tmp_path / "vec.npz",
        x_train=x_train,
        y_train=np.arange(60) % 4,
        x_test=x_test,
        y_test=np.arange(10) % 4,
    )
    monkeypatch.chdir(tmp_path)
    data = load_dataset("npz:vec.npz")  # a relative path becomes absolute in the source
    assert data.source == path
    assert data.input_shape == (4,) and data.num_classes == 4
    assert torch.isfinite(data.train.x).all() and torch.isfinite(data.test.x).all()
    torch.testing.assert_close(data.train.x[:, :3].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.train.x[:, :3].std(0, unbiased=False), torch.ones(3))
    expected = (x_test - x_train.mean(0)) / np.where(x_train.std(0) > 0, x_train.std(0), 1)
    np.testing.assert_allclose(data.test.x.numpy(), expected, rtol=1e-5, atol=1e-5)


def _bad(arrays, **changes):
    out = dict(arrays)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


NPZ_ERRORS = {
    "missing arrays": (dict(y_test=None, x_test=None), r"lacks array\(s\) x_test, y_test"),
    "float labels": (dict(y_train=np.arange(40) % 3 + 0.5), "labels must be integers"),
    "negative labels": (dict(y_test=np.arange(12) % 3 - 1), "negative label -1"),
    "labels with a gap": (
        dict(y_train=(np.arange(40) % 3) * 2, y_test=np.zeros(12, int)),
        "never use 1, 3",
    ),
    "one-based labels": (
        dict(y_train=np.arange(40) % 3 + 1, y_test=np.arange(12) % 3 + 1),
        "never use 0",
    ),
    "2-D labels": (dict(y_train=(np.arange(40) % 3)[:, None]), "1-D array"),
    "train/test shapes differ": (
        dict(x_test=np.zeros((12, 6, 5), np.uint8)),
        "different example shapes",
    ),
    "x/y length mismatch": (
        dict(x_train=np.zeros((39, 6, 6), np.uint8)),
        r"differ in length \(39 vs 40\)",
    ),
    "bad 4-D shape": (
        dict(x_train=np.zeros((40, 6, 6, 7), np.uint8), x_test=np.zeros((12, 6, 6, 7), np.uint8)),
        "C in 1, 3 or 4",
    ),
    "1-D inputs": (
        dict(x_train=np.zeros(40, np.uint8), x_test=np.zeros(12, np.uint8)),
        "expected N x D vectors",
    ),
    "NaN inputs": (dict(x_train=np.full((40, 6, 6), np.nan)), "NaN"),
    "text inputs": (dict(x_train=np.full((40, 6, 6), "a")), "must be numeric"),
    "empty test": (dict(x_test=np.zeros((0, 6, 6), np.uint8), y_test=np.zeros(0, int)), "is empty"),
}


@pytest.mark.parametrize("case", list(NPZ_ERRORS))
def test_npz_errors(tmp_path, case):
    changes, message = NPZ_ERRORS[case]
    spec = save_npz(tmp_path / "bad.npz", **_bad(good_npz_arrays(), **changes))
    with pytest.raises(PruneError, match=message):
        load_dataset(spec)


def test_npz_file_errors(tmp_path):
    with pytest.raises(PruneError, match="no such npz file"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")
    with pytest.raises(PruneError, match="needs a file path"):
        load_dataset("npz:")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip")
    with pytest.raises(PruneError, match="cannot read"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(PruneError, match="single array"):
        load_dataset(f"npz:{tmp_path / 'single.npy'}")


# -------------------------------------------------------------------------- spec, fingerprint, take


def test_unknown_spec_lists_the_names():
    with pytest.raises(PruneError, match="unknown dataset 'imagenet'") as err:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(err.value)
    assert "\n" not in str(err.value)


def test_label_fingerprint_definition_and_input_types():
    labels = [3, 0, 2, 2, 1]
    payload = b"prune.labels/1\n" + np.array(labels, "<i8").tobytes()
    expected = "sha256:" + hashlib.sha256(payload).hexdigest()
    assert label_fingerprint(labels) == expected
    assert label_fingerprint(np.array(labels, np.uint8)) == expected
    assert label_fingerprint(torch.tensor(labels, dtype=torch.int32)) == expected
    assert label_fingerprint(torch.tensor(labels)) == expected
    assert label_fingerprint(labels[::-1]) != expected  # order matters
    assert label_fingerprint([]) == "sha256:" + hashlib.sha256(b"prune.labels/1\n").hexdigest()


def test_take_keeps_index_order():
    split = Split(torch.arange(10, dtype=torch.float32)[:, None], torch.arange(10) % 3)
    sub = take(split, [7, 2, 5])
    assert len(sub) == 3
    assert sub.x[:, 0].tolist() == [7.0, 2.0, 5.0] and sub.y.tolist() == [1, 2, 2]
    assert len(take(split, np.array([], dtype=np.int64))) == 0


# -------------------------------------------------------------------------------------- label noise


def test_flip_labels_count_and_difference():
    labels = torch.arange(10_001) % 7
    before = labels.clone()
    noisy, idx = flip_labels(labels, 0.2, 7, seed=3)
    assert torch.equal(labels, before)  # input untouched
    assert len(idx) == round(0.2 * 10_001) == 2000
    assert idx.dtype == torch.int64 and noisy.dtype == torch.int64
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == len(idx)
    assert bool((noisy[idx] != labels[idx]).all())
    assert ((noisy >= 0) & (noisy < 7)).all()
    untouched = torch.ones(len(labels), dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(noisy[untouched], labels[untouched])
    assert int((noisy != labels).sum()) == 2000


def test_flip_labels_roughly_uniform():
    n, classes = 20_000, 5
    labels = torch.zeros(n, dtype=torch.long)
    noisy, idx = flip_labels(labels, 0.4, classes, seed=0)
    counts = torch.bincount(noisy[idx], minlength=classes)
    assert counts[0] == 0
    expected = len(idx) / (classes - 1)  # 2000 per other class; sd ~ 39
    assert all(abs(c - expected) < 0.08 * expected for c in counts[1:].tolist())
    # chosen positions spread over the whole range
    quarters = torch.bincount(idx // (n // 4), minlength=4)
    assert all(abs(q - len(idx) / 4) < 0.08 * len(idx) / 4 for q in quarters.tolist())


def test_flip_labels_seeded():
    labels = torch.arange(500) % 10
    a = flip_labels(labels, 0.3, 10, seed=11)
    b = flip_labels(labels, 0.3, 10, seed=11)
    c = flip_labels(labels, 0.3, 10, seed=12)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_flip_labels_zero_and_bad_fractions():
    labels = torch.arange(20) % 4
    noisy, idx = flip_labels(labels, 0.0, 4, seed=0)
    assert torch.equal(noisy, labels) and noisy is not labels and len(idx) == 0
    for bad in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(PruneError, match=r"\[0, 1\)"):
            flip_labels(labels, bad, 4, seed=0)
    with pytest.raises(PruneError, match="0..2"):
        flip_labels(labels, 0.5, 3, seed=0)


def test_data_root_falls_back_to_the_environment_and_manifests_record_it_as_a_hint(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from prune.cli import app
    from prune.manifest import Manifest

    def prune(*args):
        return CliRunner().invoke(app, [str(a) for a in args])

    monkeypatch.chdir(tmp_path)
    write_idx_set(tmp_path / "data", *random_idx_arrays())
    with pytest.raises(PruneError, match=r"needs --data-root DIR or \$PRUNE_DATA_ROOT"):
        load_dataset("mnist")
    monkeypatch.setenv("PRUNE_DATA_ROOT", "data")
    assert len(load_dataset("mnist").train) == 50
    assert prune("select", "--dataset", "mnist", "--method", "random", "--out", "m.json").exit_code == 0
    monkeypatch.delenv("PRUNE_DATA_ROOT")
    assert Manifest.load("m.json").dataset["root"] == "data"  # inside the working folder: relative
    train = ("train", "--manifest", "m.json", "--epochs", "1")
    assert prune(*train).exit_code == 0  # the recorded folder, found here
    (tmp_path / "data").rename(tmp_path / "moved")
    failed = prune(*train)
    assert failed.exit_code == 2 and "needs --data-root DIR or $PRUNE_DATA_ROOT" in failed.output
    assert "(the manifest was made from the files in data, not found here)" in failed.output
    monkeypatch.setenv("PRUNE_DATA_ROOT", str(tmp_path / "moved"))
    assert prune(*train).exit_code == 0
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # the data outside the working folder: recorded absolute
    assert prune("select", "--dataset", "mnist", "--method", "random", "--out", "n.json").exit_code == 0
    assert Manifest.load("n.json").dataset["root"] == str((tmp_path / "moved").resolve())
