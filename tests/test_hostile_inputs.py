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
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from prune.cli import app
from prune.features.store import FeatureStore
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


def test_force_still_refuses_a_subset_log_beyond_the_data(tiny, tmp_path):
    log = tmp_path / "log.json"
    assert invoke("train", "--dataset", tiny.hf, "--feature-column", "x", "--dynamic", "crest", "--epochs", "1",
                  "--batch-size", "8", "--log", log).exit_code == 0
    refused(invoke("train", "--manifest", log, "--dataset", tiny.smaller, "--force", "--metrics", tmp_path / "r.json"),
            "lie beyond the 40 examples given, so not even --force can use it")
    assert os.listdir(tmp_path) == ["log.json"]


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
    "seed of 400 digits": (_set("seed", -10**400), "seed must be >= 0, within 64 bits"),
    "seed negative": (_set("seed", -1), "seed must be >= 0, within 64 bits, got -1"),
    "method unknown": (_set("method.name", "magic"), "method.name is 'magic', not a selection method prune knows"),
    "source unknown": (_set("dataset.source", "nope"), "dataset.source is 'nope', not a data source prune reads"),
    "source a bare prefix": (_set("dataset.source", "npz:"), "dataset.source is 'npz:', not a data source"),
    "dropped_learned too short": (_set("selection.dropped_learned", [1]),
                                  "selection.dropped_learned must hold one count per class (3), got 1"),
    "dropped_hard a string": (_set("selection.dropped_hard", "x"), "selection.dropped_hard must be a list of integers"),
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


def test_inspect_summarises_a_manifest_without_optional_params(tiny, tmp_path):
    """method.params may be null, or name posterior mean without posterior_samples: inspect still works."""
    raw = copy.deepcopy(tiny.raw)
    raw["method"]["params"] = {"posterior": "mean"}
    shown = runner.invoke(app, ["inspect", str(_written(raw, tmp_path))], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "mean over the posterior samples" in shown.output, shown.output
    raw["method"]["params"] = None
    assert invoke("inspect", _written(raw, tmp_path)).exit_code == 0


@pytest.mark.parametrize("text, match", [
    ('{"schema": "prune.manifest/1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply to read"),
    ('{"schema": "prune.manifest/1", "seed": ' + "9" * 5000 + "}", "is not valid JSON (Exceeds the limit"),
])
def test_manifests_python_cannot_decode(text, match, tmp_path):
    path = _written({}, tmp_path, text)
    refused(invoke("inspect", path), match)
    refused(invoke("train", "--manifest", path, "--metrics", tmp_path / "r.json"), match)
    assert os.listdir(tmp_path) == ["m.json"]


@pytest.mark.parametrize("change, match", [
    (_set("settings.weighted", "yes"), "settings.weighted must be true or false, got 'yes'"),
    (_set("settings.seed", 10**400), "settings.seed must be >= 0, within 64 bits"),
    (_set("settings.epochs", -1), "settings.epochs must be >= 0, within 64 bits, got -1"),
    (_set("budget.epochs", -1), "budget.epochs must be >= 0, within 64 bits, got -1"),
    (_set("selections.0.reason", "why not"), "selections[0].reason is 'why not', not one of start, every, rho"),
    (_set("history", "x"), "history must be a list (one object per epoch), got 'x'"),
    (_set("history", [1]), "history[0] must be an object, got 1"),
    (_set("selections.0.reason", {}), "selections[0].reason must be a string, got an object {}"),
    (_set("checks", 5), "checks must be a list, got 5"),
    (_set("dataset.columns", "x"), "dataset.columns must be an object, got 'x'"),
])
def test_bad_subset_log_fields_are_named_by_path(change, match, tiny, tmp_path):
    log = tmp_path / "log.json"
    assert invoke("train", "--dataset", tiny.hf, "--feature-column", "x", "--dynamic", "random", "--epochs", "1",
                  "--batch-size", "8", "--log", log).exit_code == 0
    raw = json.loads(log.read_text())
    change(raw)
    log.write_text(json.dumps(raw))
    for args in (["inspect", log, "--plot", tmp_path / "counts.png"], ["train", "--manifest", log]):
        refused(invoke(*args), f"subset log {log} is invalid: {match}")
    assert os.listdir(tmp_path) == ["log.json"]


def _attr(name: str, text: str):
    return lambda file: file.attrs.__setitem__(name, text)


def _flipped_beyond(file):
    del file["noise_flipped"]
    file["noise_flipped"] = np.array([3, 60])


def _replaced(name: str, values):
    """A change that replaces the dataset ``name`` by ``values(its shape)``."""
    def change(file):
        shape = file[name].shape
        del file[name]
        file[name] = values(shape)
    return change


STORE_CASES = {
    "complete a string": (_attr("complete", "yes"), "is incomplete (its writer was interrupted)"),
    "grad_logit integers": (_replaced("grad_logit", lambda shape: np.zeros(shape, np.int64)),
                            "grad_logit holds int64 values, expected floating point"),
    "grad_logit complex": (_replaced("grad_logit", lambda shape: np.zeros(shape, np.complex64)),
                           "grad_logit holds complex64 values, expected floating point"),
    "grad_logit 2-D": (_replaced("grad_logit", lambda shape: np.zeros(shape[::2], np.float32)),
                       "grad_logit has shape (60, 3), expected (n, M, C)"),
    "embedding_point missing": (lambda file: file.__delitem__("embedding_point"), "embedding_point has shape none"),
    "margin_per_epoch missing": (lambda file: file.__delitem__("margin_per_epoch"),
                                 "lacks the dataset(s) margin_per_epoch; it was not written by `prune features`"),
    "no dataset record": (lambda file: file.attrs.__delitem__("dataset"), "lacks attribute(s) dataset;"),
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


@pytest.mark.parametrize("name, posterior", [("embedding", "mean"), ("embedding_point", "point")])
def test_huge_features_are_refused_when_read_naming_the_rows(name, posterior, tiny, tmp_path):
    """Opening reads the labels only: features are checked as a pool's rows are read, and the error
    names the bad rows of the first pool that holds any. random reads no features, so it selects."""
    store, out = tmp_path / "store.h5", tmp_path / "m.json"
    store.write_bytes(tiny.store.read_bytes())
    with h5py.File(store, "a") as file:
        values = file[name][...]
        values.reshape(len(values), -1)[:3, 0] = 1e30
        file[name][...] = values
        labels = file["labels"][:3]
    bad = [str(row) for row in range(3) if labels[row] == labels.min()]  # the classes are selected in order
    refused(invoke("select", "--features", store, "--method", "lcmat", "--posterior", posterior, "--out", out),
            f"{name} reaches 1e+30 for {len(bad)} examples, beyond 1e+06, where distances overflow (rows {', '.join(bad)};")
    assert os.listdir(tmp_path) == ["store.h5"]
    assert invoke("select", "--features", store, "--method", "random", "--out", out).exit_code == 0


def test_point_features_are_read_lazily_as_one_posterior_sample(tiny, monkeypatch):
    """An M > 1 store's *_point arrays are read like the others: nothing at open, then a pool's rows."""
    with h5py.File(tiny.store, "r") as file:
        want = torch.from_numpy(file["embedding_point"][[2, 7]])[[1, 0], None]
    reads = []
    original = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: reads.append(self.name) or original(self, key))
    grad, hess, embedding = FeatureStore.open(tiny.store).posterior_features("point")
    assert (grad.shape, hess.shape, embedding.shape) == ((60, 1, 3), (60, 1, 3), (60, 1, want.shape[-1]))
    assert set(reads) == {"/labels", "/noise_flipped"}
    assert torch.equal(embedding[torch.tensor([7, 2])], want) and reads[2:] == ["/embedding_point"]


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


# ----------------------------------------------------------------------------- mutations (property tests)


LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
                   st.sampled_from([-1, 0, 2**63, 10**400, -(10**400), 1e308, "[/x]"]))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                          max_size=3), max_leaves=6)


def places(doc, path=()):
    """Every place in a JSON document as a path of keys and positions; () is the whole document."""
    yield path
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, child in items:
        yield from places(child, (*path, key))


def nested(value, depth: int):
    """``value`` inside ``depth`` levels of objects and lists."""
    for level in range(depth):
        value = [value] if level % 2 else {"x": value}
    return value


REMOVED = object()


@st.composite
def changed(draw, value):
    """``value`` replaced by another type, made huge or odd, resized, nested deeper, or ``REMOVED``."""
    kinds = ["replace", "remove", "nest"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        kinds.append("number")
    if isinstance(value, list):
        kinds.append("resize")
    kind = draw(st.sampled_from(kinds))
    if kind == "replace":
        return draw(VALUES)
    if kind == "remove":
        return REMOVED
    if kind == "nest":
        return nested(value, draw(st.integers(1, 40)))
    if kind == "number":
        return draw(st.sampled_from([value + 1, -value - 1, value * 10**30, 1e300, float("nan"), float("inf"), 0,
                                     2**64, 10**400]))
    cut = draw(st.integers(0, len(value)))
    return draw(st.sampled_from([value[:cut], value + value[:cut], value[cut:] + value[:cut]]))


@st.composite
def mutated(draw, doc):
    """``doc`` (JSON) with one to three changes at places drawn anywhere in it."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(places(doc))))
        if not path:
            doc = draw(changed(doc).filter(lambda new: new is not REMOVED))
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        new = draw(changed(parent[path[-1]]))
        if new is REMOVED:
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
    return doc


PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTY
@given(data=st.data())
def test_a_mutated_manifest_is_used_or_refused_in_one_line(tiny, data):
    """inspect, train (with and without --force) and filter on a mutated manifest: each works, or
    stops with one line and exit 2, and then writes nothing."""
    raw = data.draw(mutated(tiny.raw))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = _written(raw, folder)
        for args in (["inspect", path], ["train", "--manifest", path, "--epochs", "1", "--metrics", folder / "r.json"],
                     ["train", "--manifest", path, "--force", "--weighted", "--epochs", "1"],
                     ["filter", "--manifest", path, "--force", "--weight-column", "--out", folder / "subset"]):
            if not used_or_refused(invoke(*args)):
                assert os.listdir(folder) == ["m.json"]


STORE_ATTRIBUTES = ("dataset", "features", "fingerprint", "num_classes", "seed", "label_noise")
STORE_ARRAYS = ("labels", "noise_flipped", "grad_logit", "hess_logit", "embedding", "grad_logit_point",
                "hess_logit_point", "embedding_point", "grad_logit_ema", "hess_logit_ema", "loss_per_epoch")


@st.composite
def store_changes(draw, attributes: dict) -> list[tuple]:
    """One or two changes to a store whose decoded attributes are ``attributes``: an attribute's
    JSON mutated, made unreadable or removed; an array's values, type, length or shape changed,
    or the array removed."""
    changes = []
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            name = draw(st.sampled_from(STORE_ATTRIBUTES))
            text = draw(st.one_of(mutated(attributes[name]).map(json.dumps), st.none(),
                                  st.sampled_from(["{not json", "[" * 5000])))
            changes.append(("attribute", name, text))
        else:
            kind = draw(st.sampled_from(["value", "dtype", "rows", "shape", "remove"]))
            detail = {"value": st.tuples(st.integers(0, 10**6), st.sampled_from([np.nan, np.inf, -1, 1e7, 2, 10**9])),
                      "dtype": st.sampled_from([np.float64, np.int64, np.uint8, np.bool_]),
                      "rows": st.integers(-3, 59), "shape": st.none(), "remove": st.none()}[kind]
            changes.append(("array", draw(st.sampled_from(STORE_ARRAYS)), (kind, draw(detail))))
    return changes


def change_store(file: h5py.File, change: tuple) -> None:
    where, name, how = change
    if where == "attribute":
        if how is None:
            file.attrs.pop(name, None)
        else:
            file.attrs[name] = how
        return
    if name not in file:  # removed by an earlier change
        return
    values, (kind, detail) = file[name][...], how
    del file[name]
    if kind == "value" and values.size:
        position, odd = detail
        with np.errstate(invalid="ignore"):  # NaN or -1 cast to integers: whatever the cast gives
            values.reshape(-1)[position % values.size] = np.asarray(odd, dtype=np.float64).astype(values.dtype)
    elif kind == "dtype":
        values = values.astype(detail)
    elif kind == "rows":  # cut to the first rows, or 3 rows more
        values = values[:detail] if detail >= 0 else np.concatenate([values, values[:3]])
    elif kind == "shape":
        values = values[..., None]
    if kind != "remove":
        file[name] = values


@PROPERTY
@given(data=st.data())
def test_a_mutated_store_is_used_or_refused_in_one_line(tiny, data):
    """select from a mutated store with any method (and either --posterior), then train on what it
    wrote: each works, or stops with one line and exit 2, and then writes nothing."""
    with h5py.File(tiny.store, "r") as file:
        attributes = {name: json.loads(file.attrs[name]) for name in STORE_ATTRIBUTES}
    changes = data.draw(store_changes(attributes))
    method, posterior = data.draw(st.sampled_from(METHODS)), data.draw(st.sampled_from(["point", "mean"]))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store, out = folder / "store.h5", folder / "m.json"
        store.write_bytes(tiny.store.read_bytes())
        with h5py.File(store, "a") as file:
            for change in changes:
                change_store(file, change)
        if not used_or_refused(invoke("select", "--features", store, "--method", method, "--posterior", posterior,
                                      "--count", "6", "--out", out)):
            assert os.listdir(folder) == ["store.h5"]
            return
        Manifest.load(out)
        used_or_refused(invoke("train", "--manifest", out, "--epochs", "1"))
