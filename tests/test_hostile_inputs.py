"""Hostile inputs: damaged or hand-edited manifests and stores, and odd datasets, stop with one line
`error: ...`, exit code 2, no traceback, and nothing written.

First the cases of issue 18 one by one, on a small Hugging Face dataset (60 training rows, 3
classes, 10 % label noise); then property tests that mutate a good manifest and a good store
(types, lengths, values, nesting) and run the commands that read them.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from prune.cli import app
from prune.manifest import Manifest
from prune.selection.methods import METHODS

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(result, match: str = "") -> str:
    """The one `error:` line of a command that had to stop (exit 2, no traceback)."""
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.exception, result.output)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert match in errors[0], errors[0]
    return errors[0]


def used_or_refused(result) -> bool:
    """True when the command succeeded; else it must have been refused in one line."""
    if result.exit_code == 0:
        return True
    refused(result)
    return False


# ----------------------------------------------------------------------------- a small dataset, store, manifest


@dataclass
class Tiny:
    hf: str          # hf:PATH, 60 training rows of 6-vectors (column x), 3 classes, 15 test rows
    smaller: str     # the same, its first 40 training rows
    store: Path      # features of hf with 10 % label noise, 2 posterior samples
    manifest: Path   # craig, 12 examples, from the store
    raw: dict        # the manifest, decoded


def _save(folder: Path, x, y, xt, yt) -> str:
    features = datasets.Features({"x": datasets.Sequence(datasets.Value("float32")), "label": datasets.Value("int64")})
    splits = {"train": (x, y), "test": (xt, yt)}
    datasets.DatasetDict({name: datasets.Dataset.from_dict({"x": a.tolist(), "label": b.tolist()}, features=features)
                          for name, (a, b) in splits.items()}).save_to_disk(str(folder))
    return f"hf:{folder}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 6)).astype(np.float32), np.arange(60) % 3
    xt, yt = rng.normal(size=(15, 6)).astype(np.float32), np.arange(15) % 3
    hf, smaller = _save(folder / "hf", x, y, xt, yt), _save(folder / "smaller", x[:40], y[:40], xt, yt)
    store, manifest = folder / "store.h5", folder / "craig.json"
    assert invoke("features", "--dataset", hf, "--feature-column", "x", "--label-noise", "0.1", "--warmup-epochs", "1",
                  "--posterior-samples", "2", "--out", store).exit_code == 0
    assert invoke("select", "--features", store, "--method", "craig", "--count", "12", "--out", manifest).exit_code == 0
    return Tiny(hf, smaller, store, manifest, json.loads(manifest.read_text()))


def _written(raw: dict, folder: Path, text: str | None = None) -> Path:
    path = folder / "m.json"
    path.write_text(json.dumps(raw) if text is None else text)
    return path


# ----------------------------------------------------------------------------- the listed cases


def test_force_still_refuses_indices_beyond_the_data(tiny, tmp_path):
    """--force goes on despite a mismatch, but not with indices (or label flips) the data do not have."""
    beyond = sum(i >= 40 for i in tiny.raw["indices"]) + sum(i >= 40 for i in tiny.raw["label_noise"]["flipped"])
    match = f"{beyond} of its indices and flipped labels lie beyond the 40 examples given, so not even --force"
    refused(invoke("train", "--manifest", tiny.manifest, "--dataset", tiny.smaller, "--force", "--epochs", "1",
                   "--metrics", tmp_path / "r.json"), match)
    refused(invoke("filter", "--manifest", tiny.manifest, "--dataset", tiny.smaller, "--force",
                   "--out", tmp_path / "subset"), match)
    assert os.listdir(tmp_path) == []


def _set(path: str, value):
    """A change that sets the field at ``path`` (dots between keys) to ``value``."""
    def change(raw):
        *parents, last = [int(key) if key.isdigit() else key for key in path.split(".")]
        for key in parents:
            raw = raw[key]
        raw[last] = value
    return change


def _emptied(raw):
    raw.update(indices=[], weights=[], per_class=[0, 0, 0])
    raw["budget"]["count"] = 0


MANIFEST_CASES = {
    "indices empty": (_emptied, "indices is empty: the manifest selects no examples"),
    "columns a string": (_set("dataset.columns", "x"), "dataset.columns must be an object, got 'x'"),
    "model.features a string": (_set("model.features", "mlp"), "model.features must be an object, got 'mlp'"),
    "dataset a list": (_set("dataset", ["hf"]), "dataset must be an object, got a list ['hf']"),
    "split a number": (_set("dataset.split", 3), "dataset.split must be a string, got 3"),
    "noise fraction a string": (_set("label_noise.fraction", "0.1"), "label_noise.fraction must be a finite number"),
    "weight of 400 digits": (_set("weights.0", 10**400), "weights[0] must be a finite number >= 0, got 100000"),
    "index of 400 digits": (_set("indices.11", 10**400), "indices[11] must be within 64 bits, got 1000000000..."),
    "size of 400 digits": (_set("dataset.num_examples", 10**400), "dataset.num_examples must be >= 1, within 64 bits"),
    "seed of 400 digits": (_set("seed", -10**400), "seed must be within 64 bits"),
    "nested params": (_set("method.params.x", json.loads("[" * 40 + "]" * 40)), "values are nested more than 32 levels deep"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_bad_manifest_fields_are_named_by_path(case, tiny, tmp_path):
    change, match = MANIFEST_CASES[case]
    raw = copy.deepcopy(tiny.raw)
    change(raw)
    path = _written(raw, tmp_path)
    for args in (["inspect", path], ["train", "--manifest", path, "--weighted", "--epochs", "1", "--metrics",
                                     tmp_path / "r.json"], ["filter", "--manifest", path, "--out", tmp_path / "subset"]):
        refused(invoke(*args), f"manifest {path} is invalid: {match}")
    assert os.listdir(tmp_path) == ["m.json"]


@pytest.mark.parametrize("text, match", [
    ('{"schema": "prune.manifest/1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply to read"),
    ('{"schema": "prune.manifest/1", "seed": ' + "9" * 5000 + "}", "is not valid JSON (Exceeds the limit"),
])
def test_manifests_python_cannot_decode(text, match, tmp_path):
    path = _written({}, tmp_path, text)
    refused(invoke("inspect", path), match)
    refused(invoke("train", "--manifest", path, "--metrics", tmp_path / "r.json"), match)
    assert os.listdir(tmp_path) == ["m.json"]


def _attr(name: str, text: str):
    return lambda file: file.attrs.__setitem__(name, text)


def _flipped_beyond(file):
    del file["noise_flipped"]
    file["noise_flipped"] = np.array([3, 60])


STORE_CASES = {
    "dataset lacks fingerprint": (
        lambda file: file.attrs.__setitem__("dataset", json.dumps(
            {k: v for k, v in json.loads(file.attrs["dataset"]).items() if k != "fingerprint"})),
        "has a bad attribute: missing key 'dataset.fingerprint'"),
    "dataset a string": (_attr("dataset", '"hf"'), "has a bad attribute: dataset must be an object, got 'hf'"),
    "label noise a string": (_attr("label_noise", '"0.1"'), "label_noise must be an object, got '0.1'"),
    "features a string": (_attr("features", '"mlp"'), "features must be an object, got 'mlp'"),
    "seed negative": (_attr("seed", "-1"), "seed must be >= 0, within 64 bits, got -1"),
    "nested thousands deep": (_attr("features", "[" * 100_000 + "]" * 100_000), "'features' is nested too deeply"),
    "flipped beyond the data": (_flipped_beyond, "noise_flipped must list indices in 0..59"),
    "huge but finite features": (lambda file: file["embedding"].__setitem__((slice(0, 3), 0, 0), 1e30),
                                 "embedding reaches 1e+30 for 3 examples, beyond 1e+06, where distances overflow"),
}


@pytest.mark.parametrize("case", sorted(STORE_CASES))
def test_bad_stores_are_refused_when_opened(case, tiny, tmp_path):
    change, match = STORE_CASES[case]
    store = tmp_path / "store.h5"
    store.write_bytes(tiny.store.read_bytes())
    with h5py.File(store, "a") as file:
        change(file)
    refused(invoke("select", "--features", store, "--method", "lcmat", "--out", tmp_path / "m.json"),
            f"feature store {store}")
    refused(invoke("select", "--features", store, "--method", "random", "--out", tmp_path / "m.json"), match)
    assert os.listdir(tmp_path) == ["store.h5"]


def test_datasets_with_an_empty_split_are_refused(tmp_path):
    rows = np.zeros((6, 2), dtype=np.float32), np.arange(6) % 2
    empty = rows[0][:0], rows[1][:0]
    for name, (train, test) in {"no-train": (empty, rows), "no-test": (rows, empty)}.items():
        source = _save(tmp_path / name, *train, *test)
        for command in (["select", "--method", "random", "--out", tmp_path / "m.json"], ["train", "--epochs", "1"]):
            refused(invoke(*command, "--dataset", source, "--feature-column", "x"), "one of its splits has no rows")
    assert not (tmp_path / "m.json").exists()


def test_a_corrupted_label_of_a_billion_allocates_nothing(tmp_path):
    x, y = np.zeros((9, 2), dtype=np.float32), np.arange(9) % 3
    y[4] = 10**9
    np.savez(tmp_path / "big.npz", x_train=x, y_train=y, x_test=x, y_test=np.arange(9) % 3)
    sources = {"npz": f"npz:{tmp_path / 'big.npz'}", "hf": _save(tmp_path / "big", x, y, x, np.arange(9) % 3)}
    for name, source in sources.items():
        extra = ["--feature-column", "x"] if name == "hf" else []
        refused(invoke("select", "--dataset", source, *extra, "--method", "random", "--out", tmp_path / "m.json"),
                "run up to 1000000000 but never use 3, 4, 5, 6, 7, ...")
    assert not (tmp_path / "m.json").exists()


def test_messages_quoting_brackets_are_printed_as_they_are(tmp_path):
    """A file name is no rich markup: `[/x]` would otherwise end in a MarkupError traceback."""
    assert "[/x].json does not exist" in refused(invoke("inspect", tmp_path / "[/x].json"))
