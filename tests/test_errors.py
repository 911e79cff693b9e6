"""Reliability: bad input gives one line `error: ...` (exit 2, no traceback); interrupted runs
leave nothing that looks complete; `prune features --resume` finishes the same store.

Everything runs on scikit-learn's digits (1437 training examples) and small npz files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prune.features.build
from prune.cli import app
from tests.cli import run, runner, stop_features_after
from prune.data import load_dataset
from prune.errors import PruneError
from prune.features import FeatureConfig, PosteriorConfig, build_store
from prune.features.partial import PartialStore, partial_path
from prune.features.store import FeatureStore
from prune.manifest import Manifest
from prune.training import TrainConfig


def fails(*args, match: str) -> str:
    """Run a command that must fail with exactly one `error:` line containing ``match``.

    A value outside a fixed choice (``refused``) is the parser's usage error instead, with the
    same exit code and no traceback.
    """
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if match.startswith("Invalid value for "):
        text = " ".join(result.output.replace("│", " ").split()).replace("Value error, ", "")
        assert match in text, result.output
        return text
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert match in errors[0], errors[0]
    return errors[0]


def refused(option: str, value: str) -> str:
    """The usage error of a value that is not one of an option's fixed choices (typer lists them)."""
    return f"Invalid value for '{option}': {value!r} is not one of"


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Digits-sized work: thread start-up dominates on a shared 2-core machine (subprocesses get
    the same setting through ONE_THREAD, so their stores compare bit for bit with ours)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory) -> Path:
    """A digits feature store with one warm-up epoch (the default 1024-row feature blocks)."""
    path = tmp_path_factory.mktemp("store") / "digits.h5"
    data = load_dataset("digits")
    config = FeatureConfig(model="mlp", warmup=TrainConfig(epochs=1), posterior=PosteriorConfig(samples=1))
    build_store(data, data.train.y, path, config, seed=0, device=torch.device("cpu"))
    return path


@pytest.fixture(scope="module")
def digits_variants(tmp_path_factory) -> dict[str, Path]:
    """digits as npz files: the same, its examples shuffled, 5 labels changed, and a subset."""
    folder = tmp_path_factory.mktemp("variants")
    data = load_dataset("digits")
    x, y = data.train.x.flatten(1).numpy(), data.train.y.numpy()
    xt, yt = data.test.x.flatten(1).numpy(), data.test.y.numpy()
    perm = np.random.default_rng(0).permutation(len(y))
    relabelled = y.copy()
    relabelled[:5] = (relabelled[:5] + 1) % 10
    variants = {"same": (x, y), "shuffled": (x[perm], y[perm]), "relabelled": (x, relabelled),
                "smaller": (x[:1000], y[:1000])}
    paths = {}
    for name, (xs, ys) in variants.items():
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], x_train=xs, y_train=ys, x_test=xt, y_test=yt)
    return paths


@pytest.fixture(scope="module")
def digits_manifest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("manifest") / "digits-random.json"
    run("select", "--method", "random", "--fraction", "0.1", "--out", path)
    return path


# ----------------------------------------------------------------------------- manifests


def _mutate(raw: dict, change) -> dict:
    raw = json.loads(json.dumps(raw))
    change(raw)
    return raw


MANIFEST_CASES = {
    "schema": (lambda m: m.update(schema="prune.manifest/0"), "schema is 'prune.manifest/0'"),
    "out of range": (lambda m: m["indices"].__setitem__(-1, 5000), "index 5000 is out of range for 1437"),
    "duplicated": (lambda m: m["indices"].__setitem__(1, m["indices"][0]), "indices contain duplicates"),
    "unsorted": (lambda m: m["indices"].reverse(), "not sorted ascending"),
    "negative": (lambda m: m["indices"].__setitem__(0, -3), "negative value (-3)"),
    "weights length": (lambda m: m["weights"].pop(), "weights has 143 entries, indices has 144"),
    "weights NaN": (lambda m: m["weights"].__setitem__(0, float("nan")), "weights[0] must be a finite number >= 0"),
    "indices not ints": (lambda m: m["indices"].__setitem__(0, "7"), "indices[0] must be an integer, got '7'"),
    "per_class": (lambda m: m["per_class"].__setitem__(0, "x"), "per_class[0] must be an integer"),
    "missing key": (lambda m: m.pop("weights"), "missing key 'weights'"),
    "dataset": (lambda m: m.update(dataset="digits"), "dataset must be an object, got 'digits'"),
    "num_classes": (lambda m: m["dataset"].update(num_classes="ten"), "dataset.num_classes must be an integer"),
    "method": (lambda m: m.update(method="craig"), "method must be an object"),
    "model": (lambda m: m.update(model=[1]), "model must be an object, got a list [1]"),
    "noise labels": (lambda m: m.update(label_noise={"fraction": 0.1, "seed": 0, "flipped": [1], "noisy_labels": [10]}),
                     "label_noise.noisy_labels[0] must be in 0..9, got 10"),
    "noise types": (lambda m: m.update(label_noise={"fraction": 0.1, "seed": 0, "flipped": ["a"], "noisy_labels": [1]}),
                    "label_noise.flipped[0] must be an integer, got 'a'"),
    "top level": (lambda m: m.clear(), "schema is None"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_invalid_manifests_are_refused_in_one_line(case, digits_manifest, tmp_path):
    change, match = MANIFEST_CASES[case]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_mutate(json.loads(digits_manifest.read_text()), change)))
    fails("inspect", bad, match=match)


def test_manifest_missing_not_json_or_a_folder(tmp_path):
    fails("train", "--manifest", tmp_path / "missing.json", match="does not exist")
    (tmp_path / "cut.json").write_text('{"schema": "prune.manifest/1", "indi')
    fails("train", "--manifest", tmp_path / "cut.json", match="is not valid JSON")
    (tmp_path / "list.json").write_text("[1, 2]")
    fails("inspect", tmp_path / "list.json", match="the top level is not a JSON object")
    fails("inspect", tmp_path, match="is a folder")


def test_manifest_on_other_data_says_what_differs(digits_manifest, digits_variants):
    error = fails("inspect", digits_manifest, "--dataset", f"npz:{digits_variants['smaller']}",
                  match="size differs: manifest has 1437 training examples, the data has 1000")
    assert "--force" not in error  # inspect has none to offer
    assert "or --force" in fails("train", "--manifest", digits_manifest, "--dataset",
                                 f"npz:{digits_variants['shuffled']}", match="order differs")
    fails("inspect", digits_manifest, "--dataset", f"npz:{digits_variants['relabelled']}",
          match="labels differ: examples per class do not match (class ")
    assert "matches" in run("inspect", digits_manifest, "--dataset", f"npz:{digits_variants['same']}")


def test_check_dataset_without_counts_keeps_the_fingerprint_only_path(digits_manifest):
    chosen = Manifest.load(digits_manifest)
    with pytest.raises(PruneError, match="labels or their order differ"):
        chosen.check_dataset(fingerprint="sha256:0", num_examples=1437)
    warning = chosen.check_dataset(fingerprint="sha256:0", num_examples=1437, force=True)
    assert "continuing because of --force" in warning
    assert chosen.check_dataset(fingerprint=chosen.dataset["fingerprint"], num_examples=1437) is None


# ----------------------------------------------------------------------------- feature stores


def _copy(store: Path, to: Path) -> Path:
    to.write_bytes(store.read_bytes())
    return to


def test_bad_stores_are_refused(digits_store, tmp_path):
    fails("select", "--features", tmp_path / "missing.h5", match="does not exist")
    half = tmp_path / "half.h5"
    half.write_bytes(digits_store.read_bytes()[: digits_store.stat().st_size // 2])
    fails("select", "--features", half, match="cannot be read")
    (tmp_path / "text.h5").write_text("not hdf5")
    fails("select", "--features", tmp_path / "text.h5", match="cannot be read")

    old = _copy(digits_store, tmp_path / "old.h5")
    with h5py.File(old, "a") as file:
        file.attrs["schema"] = "prune.features/0"
    fails("select", "--features", old, match="has schema 'prune.features/0', this prune reads 'prune.features/1'")

    unfinished = _copy(digits_store, tmp_path / "unfinished.h5")
    with h5py.File(unfinished, "a") as file:
        del file.attrs["complete"]
    fails("select", "--features", unfinished, match="is incomplete")

    no_attr = _copy(digits_store, tmp_path / "no-attr.h5")
    with h5py.File(no_attr, "a") as file:
        del file.attrs["fingerprint"]
    fails("select", "--features", no_attr, match="lacks attribute(s) fingerprint")

    short = _copy(digits_store, tmp_path / "short.h5")
    with h5py.File(short, "a") as file:
        labels = file["labels"][:100]
        del file["labels"]
        file["labels"] = labels
    fails("select", "--features", short, match="grad_logit has shape (1437, 1, 10), expected (100, 1, 10)")

    bad_labels = _copy(digits_store, tmp_path / "labels.h5")
    with h5py.File(bad_labels, "a") as file:
        file["labels"][0] = 12
    fails("select", "--features", bad_labels, match="outside 0..9")


def test_a_store_is_read_only_where_a_pool_needs_it(digits_store, monkeypatch):
    """Opening reads the labels only; a pool's rows read just the 1024-row slabs that hold them."""
    reads = []
    original = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: reads.append((self.name, key)) or original(self, key))
    store = FeatureStore.open(digits_store)
    assert {name for name, _ in reads} == {"/labels", "/noise_flipped"}
    reads.clear()
    rows = store.grad_logit[torch.tensor([1100, 3, 1100, 5])]
    assert reads == [("/grad_logit", slice(0, 1024)), ("/grad_logit", slice(1024, 1437))]
    with h5py.File(digits_store, "r") as file:
        assert torch.equal(rows, torch.from_numpy(file["grad_logit"][[3, 5, 1100]])[[2, 0, 2, 1]])
    reads.clear()
    store.embedding[torch.tensor([2, 7])]
    assert reads == [("/embedding", slice(0, 1024))]


@pytest.mark.parametrize("name, method", [("grad_logit", "craig"), ("embedding", "lcmat"), ("hess_logit_ema", "adacore"),
                                          ("loss_per_epoch", "crest")])
def test_nan_or_inf_in_a_store_is_never_selected_over(name, method, digits_store, tmp_path):
    """Features are checked as a pool's rows are read: the error names the bad rows of the pool."""
    poked = _copy(digits_store, tmp_path / "nan.h5")
    with h5py.File(poked, "a") as file:
        bad = np.flatnonzero(file["labels"][...] == 3)[[4, 9]]
        values = file[name][...]
        values.reshape(len(values), -1)[bad[0], 0] = np.nan
        values.reshape(len(values), -1)[bad[1], 0] = np.inf
        file[name][...] = values
    fails("select", "--features", poked, "--method", method, "--out", tmp_path / "m.json",
          match=f"{name} has NaN or inf for 2 examples (rows {bad[0]}, {bad[1]};")
    assert not (tmp_path / "m.json").exists()


def test_diverged_warmup_is_reported_and_writes_nothing(tmp_path):
    out = tmp_path / "div.h5"
    fails("features", "--lr", "1e6", "--warmup-epochs", "1", "--out", out, match="diverged")
    fails("select", "--lr", "1e6", "--warmup-epochs", "1", "--out", tmp_path / "m.json", match="diverged")
    assert os.listdir(tmp_path) == []


def test_nan_features_are_caught_while_writing(tmp_path, monkeypatch):
    original = prune.features.build.extract_batches

    def poisoned(*args, **kwargs):
        for batch in original(*args, **kwargs):
            batch["embedding"][0, 0] = float("nan")
            yield batch

    monkeypatch.setattr(prune.features.build, "extract_batches", poisoned)
    fails("features", "--warmup-epochs", "1", "--out", tmp_path / "nan.h5", match="embedding became NaN or inf")
    assert os.listdir(tmp_path) == []  # neither the store nor its unfinished work


def test_store_checked_against_an_explicit_dataset(digits_store, digits_variants, tmp_path):
    out = tmp_path / "m.json"
    fails("select", "--features", digits_store, "--dataset", f"npz:{digits_variants['shuffled']}", "--out", out,
          match="order differs")
    fails("select", "--features", digits_store, "--dataset", f"npz:{digits_variants['relabelled']}", "--out", out,
          match="labels differ")
    fails("select", "--features", digits_store, "--dataset", f"npz:{digits_variants['smaller']}", "--out", out,
          match="size differs: store has 1437 training examples, the data has 1000")
    assert not out.exists()
    run("select", "--features", digits_store, "--dataset", f"npz:{digits_variants['same']}", "--method", "craig",
        "--out", out)
    run("select", "--features", digits_store, "--method", "craig", "--out", tmp_path / "default.json")  # no check
    assert Manifest.load(out).indices.tolist() == Manifest.load(tmp_path / "default.json").indices.tolist()


# ----------------------------------------------------------------------------- budgets and options


@pytest.mark.parametrize("args, match", [
    (["--fraction", "0"], "--fraction must be in (0, 1], got 0.0"),
    (["--fraction", "-0.1"], "--fraction must be in (0, 1]"),
    (["--fraction", "1.5"], "--fraction must be in (0, 1]"),
    (["--count", "0"], "--count must be at least 1"),
    (["--count", "1438"], "--count 1438 exceeds the 1437 examples"),
    (["--count", "9", "--balance", "equal"], "--balance equal needs at least one example per non-empty class"),
    (["--balance", "even"], refused("--balance", "even")),
    (["--max-pool", "0"], "--max-pool must be a whole number >= 1"),
    (["--method", "lcmat", "--rho", "-1"], "--rho must be a finite number >= 0"),
    (["--method", "crest", "--subset-size", "0"], "--subset-size must be a whole number >= 1"),
    (["--method", "ensemble"], "method ensemble needs posterior samples"),
    (["--method", "herding"], "herding averages over posterior samples by default, but"),
    (["--method", "nope"], refused("--method", "nope")),
])
def test_bad_budgets_and_method_options(args, match, digits_store, tmp_path):
    fails("select", "--features", digits_store, *args, "--out", tmp_path / "m.json", match=match)
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("args, match", [
    (["select", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["select", "--model", "vgg"], refused("--model", "vgg")),
    (["features", "--model", "vgg", "--out", "x.h5"], refused("--model", "vgg")),
    (["train", "--model", "vgg"], refused("--model", "vgg")),
    (["select", "--method", "kmeans"], refused("--method", "kmeans")),
    (["select", "--device", "tpu"], refused("--device", "tpu")),
    (["features", "--batch-size", "0", "--out", "x.h5"], "--batch-size must be a whole number >= 1"),
    (["features", "--lr", "-1", "--out", "x.h5"], "--lr must be a finite number >= 0"),
    (["train", "--epochs", "-1"], "epochs must be a whole number >= 0"),
    (["features", "--posterior-samples", "0", "--out", "x.h5"], "--posterior-samples must be a whole number >= 1"),
    (["features", "--label-noise", "1", "--out", "x.h5"], "label-noise fraction must be in [0, 1)"),
])
def test_unknown_names_and_bad_settings(args, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(*args, match=match)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args, keywords, match", [
    (["--fraction", "0"], {"fraction": 0}, "--fraction must be in (0, 1]"),
    (["--count", "5000"], {"count": 5000}, "--count 5000 exceeds the 1437 examples"),
    (["--count", "5", "--balance", "equal"], {"count": 5, "balance": "equal"}, "--balance equal needs at least one"),
    (["--method", "ensemble", "--posterior-samples", "1"], {"method": "ensemble", "posterior_samples": 1},
     "method ensemble needs posterior samples, got --posterior-samples 1"),
])
def test_selection_is_checked_before_any_model_runs(args, keywords, match, tmp_path, monkeypatch):
    """Every check that needs only the labels and the options fails before the warm-up, in the CLI and the library."""
    import prune.api
    import prune.bench

    def model_ran(*args, **kwargs):
        raise AssertionError("a model ran before the options were checked")

    monkeypatch.setattr(prune.api, "build_store", model_ran)
    fails("select", *(["--method", "craig"] if "--method" not in args else []), *args, "--out", tmp_path / "m.json",
          match=match)
    with pytest.raises(PruneError) as error:  # a Python caller reads the parameters' names, the CLI the flags
        prune.api.select_coreset("digits", **{"method": "craig", **keywords})
    assert match in error.value.cli_message
    assert os.listdir(tmp_path) == []
    if "fraction" in keywords or "posterior_samples" in keywords:  # bench checks its grid the same way
        monkeypatch.setattr(prune.bench, "warm_up", model_ran)
        monkeypatch.setattr(prune.bench, "_train_and_test", model_ran)
        grid = ["--fractions", "0"] if "fraction" in keywords else ["--posterior-samples", "1"]
        fails("bench", "--methods", keywords.get("method", "craig"), *grid, "--out", tmp_path / "bench", match=match)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", [["select", "--method", "random"], ["features", "--out", "x.h5"], ["train"]])
def test_cuda_without_cuda(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(*command, "--device", "cuda", match="no CUDA device is available")


def test_unwritable_outputs_fail_before_any_work(tmp_path, monkeypatch):
    import prune.features.build

    def no_work(*args, **kwargs):
        raise AssertionError("the output should have been refused first")

    monkeypatch.setattr(prune.features.build, "warm_start", no_work)
    monkeypatch.setattr("prune.training.fit", no_work)
    blocker = tmp_path / "file"
    blocker.write_text("")
    fails("select", "--out", blocker / "m.json", match="cannot write")
    fails("features", "--out", blocker / "s.h5", match="cannot write")
    fails("train", "--metrics", blocker / "r.json", match="cannot write")
    fails("select", "--out", tmp_path, match="is a folder")


def test_a_class_without_training_examples_gets_zero(tmp_path):
    """Class 1 occurs only in the test split: every method selects 0 of it, both balances work."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    y[y == 1] = 2
    path = tmp_path / "gap.npz"
    np.savez(path, x_train=rng.normal(size=(90, 6)).astype(np.float32), y_train=y,
             x_test=rng.normal(size=(9, 6)).astype(np.float32), y_test=np.arange(9) % 3)
    for method in ("random", "craig", "crest"):
        for balance in ("proportional", "equal"):
            out = tmp_path / f"{method}-{balance}.json"
            run("select", "--dataset", f"npz:{path}", "--method", method, "--balance", balance, "--count", "10",
                "--warmup-epochs", "1", "--out", out)
            chosen = Manifest.load(out)
            assert chosen.per_class[1] == 0 and sum(chosen.per_class) == len(chosen) == 10
    assert Manifest.load(tmp_path / "craig-equal.json").per_class == [5, 0, 5]
    fails("select", "--dataset", f"npz:{path}", "--method", "random", "--balance", "equal", "--count", "1",
          match="budget is 1 for 2 classes")


# ----------------------------------------------------------------------------- npz sources


def _npz(path: Path, **arrays) -> str:
    rng = np.random.default_rng(0)
    base = {"x_train": rng.random((30, 4)), "y_train": np.arange(30) % 3,
            "x_test": rng.random((6, 4)), "y_test": np.arange(6) % 3}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return f"npz:{path}"


def test_bad_npz_files(tmp_path):
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.zeros((8, 8)), np.zeros((7, 8)), np.zeros((8, 8))]
    cases = {
        "missing": ({"x_test": None, "y_test": None}, "lacks array(s) x_test, y_test"),
        "float labels": ({"y_train": np.linspace(0, 2, 30)}, "labels must be integers 0..C-1"),
        "negative labels": ({"y_train": np.arange(30) % 3 - 1}, "negative label -1"),
        "label gap": ({"y_train": (np.arange(30) % 3) * 2, "y_test": (np.arange(6) % 3) * 2}, "never use 1, 3"),
        "ragged images": ({"x_train": ragged, "y_train": np.arange(3) % 2}, "cannot read arrays"),
        "shapes differ": ({"x_train": np.zeros((30, 8, 8)), "x_test": np.zeros((6, 7, 8))},
                          "different example shapes"),
        "lengths differ": ({"y_train": np.arange(29) % 3}, "differ in length"),
        "nan inputs": ({"x_train": np.full((30, 4), np.nan)}, "NaN or infinite"),
    }
    for name, (arrays, match) in cases.items():
        source = _npz(tmp_path / f"{name.replace(' ', '-')}.npz", **arrays)
        fails("select", "--dataset", source, "--method", "random", "--out", tmp_path / "m.json", match=match)
    fails("select", "--dataset", f"npz:{tmp_path / 'none.npz'}", match="no such npz file")
    assert not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------- dry run


def test_dry_run_from_a_store_runs_nothing_and_matches_the_real_pools(digits_store, tmp_path, monkeypatch):
    import prune.selection.methods.base

    args = ["select", "--features", digits_store, "--method", "crest", "--subset-size", "40",
            "--fraction", "0.2", "--seed", "3"]
    out = tmp_path / "m.json"

    def no_greedy(*a, **k):
        raise AssertionError("a dry run must not run greedy")

    with monkeypatch.context() as patch:
        patch.setattr(prune.selection.methods.base, "facility_location", no_greedy)
        text = run(*args, "--dry-run", "--out", out)
    assert not out.exists() and "nothing was written" in text
    assert "pools (size: budget)" in text and "memory:" in text
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[0].isdigit():
            rows[int(cells[0])] = (int(cells[1]), int(cells[2]))
    run(*args, "--out", out)
    chosen = Manifest.load(out)
    sizes = torch.bincount(load_dataset("digits").train.y, minlength=10).tolist()
    assert rows == {c: (sizes[c], k) for c, k in enumerate(chosen.per_class)}
    assert f"greedy runs: {chosen.selection['pools']};" in text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc/self/status (VmHWM)")
def test_dry_run_memory_is_within_30_percent_of_the_measured_peak(tmp_path):
    """Two classes of 3000: craig's distances (p = 3000) weigh as much as Python, torch and the data."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6000, 32)).astype(np.float32), (rng.random(6000) < 0.5).astype(np.int64)
    np.savez(tmp_path / "two.npz", x_train=x, y_train=y, x_test=x[:200], y_test=y[:200])
    script = (
        "import re, sys, prune\n"
        "kw = dict(dataset='npz:' + sys.argv[1], method='craig', drop_hard=0, warmup_epochs=1, device='cpu')\n"
        "plan = prune.select_coreset(dry_run=True, **kw)\n"
        "prune.select_coreset(**kw)\n"
        "peak = int(re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read()).group(1)) * 1024\n"
        "print(plan.memory_bytes, peak)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "two.npz")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    estimate, peak = map(int, done.stdout.split()[-2:])
    assert 0.7 * peak <= estimate <= 1.3 * peak, (estimate, peak)


def test_dry_run_downloads_nothing_and_creates_no_folder(tmp_path):
    root = tmp_path / "data" / "fashion"
    fails("select", "--dataset", "fashion-mnist", "--data-root", root, "--download", "--dry-run",
          match="a dry run downloads nothing")
    assert os.listdir(tmp_path) == []


def test_dry_run_without_a_store_builds_no_features(tmp_path, monkeypatch):
    def no_features(*args, **kwargs):
        raise AssertionError("a dry run must not compute features")

    monkeypatch.setattr("prune.api.build_store", no_features)
    monkeypatch.setattr("prune.features.build.warm_start", no_features)
    monkeypatch.chdir(tmp_path)
    text = run("select", "--dry-run", "--method", "craig", "--max-pool", "100", "--posterior-samples", "2")
    # digits' largest class has 155 examples: two pools of 78 and 77; craig: the float32 78 x 78 result, and one
    # block of rows (all 78 of them) with its Gram buffer
    assert "largest pool p = 78" in text and f"pool {3 * 4 * 78 ** 2 / 1e3:.1f} KB" in text
    # features: 1437 x (2 samples + the unperturbed) x (2 x 10 + 128) + 1437 x 20 + 1437 x 5 x 3 floats (loss, p_y,
    # margin per epoch), + int64 labels and the uint8 correctness per epoch
    assert f"compute {(1437 * 3 * 148 + 1437 * 35) * 4 / 1e6 + 1437 * 13 / 1e6:.1f} MB" in text
    assert "manifests/digits-craig-0.1.json" in text
    fails("select", "--dry-run", "--count", "5", "--balance", "equal", match="budget is 5 for 10 classes")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- interrupted work


KILL_AT_RENAME = """
import os, signal, sys
target = os.path.abspath(sys.argv[1])
replace = os.replace
def killing_replace(src, dst, *args, **kwargs):
    if os.path.abspath(dst) == target:  # the finished temporary file is about to be renamed
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst, *args, **kwargs)
link = os.link
def killing_link(src, dst, *args, **kwargs):  # a new output is claimed by a link, never replacing a file
    if os.path.abspath(dst) == target:
        os.kill(os.getpid(), signal.SIGKILL)
    return link(src, dst, *args, **kwargs)
os.replace, os.link = killing_replace, killing_link
from prune.cli import app
app(sys.argv[2:], prog_name="prune")
"""


@pytest.mark.parametrize("command", [
    ["select", "--method", "random", "--out"],
    ["train", "--epochs", "1", "--metrics"],
    ["features", "--warmup-epochs", "1", "--out"],
])
def test_killed_just_before_the_rename_leaves_no_output(command, tmp_path):
    """SIGKILL at the worst moment (temporary file complete, not yet renamed); then a new run works."""
    target = tmp_path / "output"
    result = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, str(target), *command, str(target)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=ONE_THREAD)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert not target.exists()
    leftovers = hidden(tmp_path)
    assert any(name.startswith(".output.tmp-") for name in leftovers), leftovers
    run(*command, target)  # a new run is not confused by the old temporary files, and removes them
    assert hidden(tmp_path) == []
    if command[0] == "select":
        Manifest.load(target)
    elif command[0] == "train":
        assert json.loads(target.read_text())["epochs"] == 1
    else:
        FeatureStore.open(target)
        assert not partial_path(target).exists()


def test_leftovers_of_live_processes_and_other_outputs_are_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / f".m.json.tmp-{dead.pid}").mkdir()  # a dead writer's folder (prune filter writes folders)
        (tmp_path / f".m.json.tmp-{dead.pid}" / "part").write_text("x")
        (tmp_path / f".m.json.tmp-{live.pid}").write_text("being written")
        (tmp_path / f".other.json.tmp-{dead.pid}").write_text("another output's")
        run("select", "--method", "random", "--out", tmp_path / "m.json")
        assert hidden(tmp_path) == sorted([f".m.json.tmp-{live.pid}", f".other.json.tmp-{dead.pid}"])
    finally:
        live.kill()
        live.wait()


def _store_bytes(path: Path) -> tuple[dict, dict]:
    with h5py.File(path, "r") as file:
        return {k: file[k][...].tobytes() for k in file}, {k: file.attrs[k] for k in file.attrs}


def test_killed_features_resume_gives_the_same_store(tmp_path):
    """SIGKILL `prune features` once its work folder shows progress; --resume finishes the same bytes."""
    args = ["features", "--warmup-epochs", "1", "--posterior-kind", "seeds", "--posterior-samples", "3"]
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-m", "prune", *args, "--out", str(out)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    progress = partial_path(out) / "progress.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "prune features finished before it could be killed"
            try:
                if json.loads(progress.read_text())["samples_done"] >= 1:  # mid-way through the samples
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()
    text = run(*args, "--resume", "--out", out)
    assert "resuming" in text and ("warm-up done, 1 of 3" in text or "warm-up done, 2 of 3" in text), text
    reference = tmp_path / "reference.h5"
    run(*args, "--out", reference)
    assert _store_bytes(out) == _store_bytes(reference)
    assert hidden(tmp_path) == []


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    """Small feature blocks (256 rows: 6 per pass), 3 posterior samples, Hutchinson probes; the
    data, the settings and the bytes of an uninterrupted store."""
    data = load_dataset("digits")
    config = FeatureConfig(model="mlp", warmup=TrainConfig(epochs=2), batch_size=256,
                           posterior=PosteriorConfig(samples=3, hessian="hutchinson", hutchinson_samples=4))
    reference = _build((data, config, None), tmp_path_factory.mktemp("reference") / "store.h5")
    return data, config, _store_bytes(reference)


def _build(resumable, path, **kwargs):
    data, config, _ = resumable
    return build_store(data, data.train.y, path, config, seed=1, device=torch.device("cpu"), **kwargs)


# 2 checkpoint passes, 3 feature passes and the unperturbed pass, 6 batches each: stop during warm-up,
# in sample 0, right after sample 0, in the last sample, and in the unperturbed pass
@pytest.mark.parametrize("stop_after", [5, 14, 18, 27, 33])
def test_resume_after_an_interruption_equals_an_uninterrupted_store(stop_after, resumable, tmp_path, monkeypatch):
    out = tmp_path / "store.h5"
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        stop_features_after(patch, stop_after)
        _build(resumable, out)
    assert not out.exists() and partial_path(out).is_dir()
    _build(resumable, out, resume=True)
    assert _store_bytes(out) == resumable[2]
    assert not partial_path(out).exists()


def test_resume_refuses_other_settings_and_fresh_runs_replace_old_work(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "s.h5"
    with monkeypatch.context() as patch:
        patch.setattr(prune.features.build, "extract_batches", interrupt)
        result = runner.invoke(app, ["features", "--warmup-epochs", "1", "--out", str(out)])
    assert result.exit_code == 130 and "--resume" in result.output
    assert partial_path(out).is_dir() and not out.exists()
    fails("features", "--warmup-epochs", "1", "--lr", "0.1", "--resume", "--out", out,
          match="features.warmup.lr: 0.05 then, 0.1 now")
    assert partial_path(out).is_dir()  # kept: the user may still resume it with the right settings
    text = run("features", "--warmup-epochs", "1", "--out", out)  # no --resume: start over
    assert "replacing the unfinished work" in text
    assert FeatureStore.open(out).num_examples == 1437 and hidden(tmp_path) == []
    fails("features", "--warmup-epochs", "1", "--resume", "--out", tmp_path / "t.h5", match="no unfinished work")
    assert not (tmp_path / "t.h5").exists()


def test_every_command_refuses_an_existing_output_unless_overwrite(digits_store, tmp_path):
    """One policy: select, features and train refuse an existing output without --overwrite (nothing
    changes), replace it with it; features --resume with nothing to resume never replaces a finished store."""
    out = tmp_path / "s.h5"
    run("features", "--warmup-epochs", "0", "--out", out)
    before = out.read_bytes()
    fails("features", "--warmup-epochs", "1", "--out", out, match="already exists; pass --overwrite")
    fails("features", "--warmup-epochs", "1", "--resume", "--out", out, match="already exists; pass --overwrite")
    fails("features", "--warmup-epochs", "1", "--resume", "--overwrite", "--out", out, match="no unfinished work")
    assert out.read_bytes() == before
    run("features", "--warmup-epochs", "1", "--overwrite", "--out", out)
    assert FeatureStore.open(out).meta["features"]["warmup"]["epochs"] == 1

    manifest, metrics = tmp_path / "m.json", tmp_path / "metrics.json"
    run("select", "--features", digits_store, "--method", "random", "--out", manifest)
    fails("select", "--features", digits_store, "--method", "random", "--fraction", "0.2", "--out", manifest,
          match="already exists")
    assert len(Manifest.load(manifest)) == 144
    run("select", "--features", digits_store, "--method", "random", "--fraction", "0.2", "--out", manifest, "--overwrite")
    assert len(Manifest.load(manifest)) == 287
    metrics.write_text("{}")
    fails("train", "--manifest", manifest, "--epochs", "0", "--metrics", metrics, match="already exists")
    assert metrics.read_text() == "{}"
    run("train", "--manifest", manifest, "--epochs", "0", "--metrics", metrics, "--overwrite")
    assert "test_accuracy" in json.loads(metrics.read_text())


def test_ctrl_c_exits_130_without_a_traceback_or_an_output(digits_store, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("prune.api.select", interrupt)
    result = runner.invoke(app, ["select", "--features", str(digits_store), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 130 and "interrupted" in result.output and "Traceback" not in result.output
    assert os.listdir(tmp_path) == []


def test_two_writers_of_one_store_are_refused(tmp_path):
    shape = dict(n=10, samples=1, num_classes=3, embedding_dim=4, checkpoints=1, dtype="float32")
    with PartialStore.open(tmp_path / "s.h5", settings={}, resume=False, **shape):
        for resume in (False, True):
            with pytest.raises(PruneError, match="another prune process is writing"):
                with PartialStore.open(tmp_path / "s.h5", settings={}, resume=resume, **shape):
                    pass
    assert partial_path(tmp_path / "s.h5").is_dir()


# ----------------------------------------------------------------------------- round trips


@st.composite
def manifests(draw):
    n = draw(st.integers(min_value=1, max_value=300))
    classes = draw(st.integers(min_value=1, max_value=12))
    indices = sorted(draw(st.sets(st.integers(min_value=0, max_value=n - 1), min_size=1, max_size=min(n, 60))))
    weights = draw(st.lists(st.one_of(
        st.floats(min_value=0, max_value=1e300, allow_nan=False, allow_infinity=False),
        st.integers(min_value=0, max_value=10**6)), min_size=len(indices), max_size=len(indices)))
    per_class = [0] * classes
    for _ in indices:
        per_class[draw(st.integers(min_value=0, max_value=classes - 1))] += 1
    noise = draw(st.one_of(st.none(), st.builds(
        lambda flips: {"fraction": 0.1, "seed": 0, "flipped": sorted(flips), "noisy_labels": [0] * len(flips)},
        st.sets(st.integers(min_value=0, max_value=n - 1), max_size=5))))
    return Manifest(
        indices=np.array(indices, dtype=np.int64), weights=np.array(weights, dtype=np.float64),
        dataset={"source": draw(st.sampled_from(["digits", "npz:/tmp/x y.npz", "hf:/data/é"])), "split": "train",
                 "num_examples": n, "num_classes": classes, "fingerprint": "sha256:" + "ab" * 32},
        method={"name": "craig", "params": {"max_pool": draw(st.integers(1, 10**6))}},
        budget={"fraction": None, "count": len(indices), "balance": "proportional"},
        per_class=per_class, seed=draw(st.one_of(st.none(), st.integers(0, 2**63 - 1))),
        label_noise=noise,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifests())
def test_manifest_save_load_round_trip(tmp_path, manifest):
    path = tmp_path / "m.json"
    manifest.save(path, overwrite=True)  # tmp_path is shared by the examples
    loaded = Manifest.load(path)
    assert loaded.indices.dtype == np.int64 and np.array_equal(loaded.indices, manifest.indices)
    assert loaded.weights.dtype == np.float64 and np.array_equal(loaded.weights, manifest.weights)
    assert loaded.to_dict() == manifest.to_dict()
    assert json.loads(path.read_text()) == json.loads(json.dumps(manifest.to_dict()))
    assert hidden(tmp_path) == []  # no temporary file left behind


@settings(max_examples=100, deadline=None)
@given(manifests(), st.data())
def test_manifests_with_a_broken_invariant_do_not_save(manifest, data):
    raw = manifest.to_dict()
    n = raw["dataset"]["num_examples"]
    breakage = data.draw(st.sampled_from(["duplicate", "out of range", "negative", "weights", "per_class"]))
    if breakage == "duplicate" and raw["indices"]:
        raw["indices"].append(raw["indices"][-1]), raw["weights"].append(1)
        raw["per_class"][0] += 1
    elif breakage == "out of range":
        raw["indices"].append(n + data.draw(st.integers(0, 100))), raw["weights"].append(1)
        raw["per_class"][0] += 1
    elif breakage == "negative":
        raw["indices"].insert(0, -data.draw(st.integers(1, 100))), raw["weights"].append(1)
        raw["per_class"][0] += 1
    elif breakage == "weights":
        raw["weights"].append(1.0)
    else:
        raw["per_class"][0] += 1
    from prune.manifest import validate

    with pytest.raises(PruneError, match="is invalid"):
        validate(raw, source="m.json")
