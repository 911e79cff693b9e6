"""No run destroys data: outputs never replace special files or inputs, commits are whole under
Ctrl-C, `--resume` checks the work it trusts, full disks and bad seeds are one line."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from prune.atomic import write_text
from prune.cli import app
from tests import cli
from tests.cli import run, runner, stop_features_after
from prune.data import load_dataset
from prune.errors import PruneError
from prune.features import FeatureConfig, PosteriorConfig, build_store
from prune.manifest import Manifest
from prune.training import TrainConfig

def fails(*args, match: str) -> str:
    """One `error:` line containing ``match``, exit 2, no traceback."""
    output = cli.fails(*args)
    errors = output.split("error: ")[1:]
    assert len(errors) == 1 and match in errors[0], output
    return errors[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A digits feature store (no warm-up: only its existence matters here)."""
    path = tmp_path_factory.mktemp("store") / "digits.h5"
    data = load_dataset("digits")
    build_store(data, data.train.y, path, FeatureConfig(model="mlp", warmup=TrainConfig(epochs=0), posterior=PosteriorConfig(samples=1)), seed=0,
                device=torch.device("cpu"))
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """digits as a Hugging Face dataset saved to disk, and a random manifest of it."""
    datasets = pytest.importorskip("datasets")
    folder = tmp_path_factory.mktemp("hf")
    data = load_dataset("digits")
    path = folder / "digits"
    datasets.Dataset.from_dict({"x": data.train.x.flatten(1).numpy(), "label": data.train.y.numpy()}).save_to_disk(str(path))
    manifest = folder / "m.json"
    run("select", "--dataset", f"hf:{path}", "--feature-column", "x", "--method", "random", "--out", manifest)
    return path, manifest


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- 1: special files


def test_outputs_never_replace_a_pipe(store, saved, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path, manifest = saved
    fails("select", "--features", store, "--method", "random", "--out", fifo, match="is a pipe (FIFO)")
    fails("features", "--warmup-epochs", "0", "--out", fifo, match="is a pipe (FIFO)")
    fails("train", "--epochs", "1", "--metrics", fifo, match="is a pipe (FIFO)")
    fails("train", "--dynamic", "random", "--epochs", "1", "--log", fifo, match="is a pipe (FIFO)")
    fails("filter", "--manifest", manifest, "--dataset", f"hf:{path}", "--out", fifo, "--overwrite",
          match="is a pipe (FIFO)")
    link = tmp_path / "link"
    link.symlink_to(fifo)
    fails("select", "--features", store, "--method", "random", "--out", link, match="is a pipe (FIFO)")
    with pytest.raises(PruneError, match="is a pipe"):  # the rename itself refuses too (Python callers)
        write_text(fifo, "{}")
    assert fifo.is_fifo() and hidden(tmp_path) == []


def test_filter_replaces_only_a_saved_dataset(saved, tmp_path):
    path, manifest = saved
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    fails("filter", "--manifest", manifest, "--dataset", f"hf:{path}", "--out", folder, "--overwrite",
          match="holds no saved dataset")
    assert (folder / "notes.txt").read_text() == "keep me"
    out = tmp_path / "pruned"
    run("filter", "--manifest", manifest, "--dataset", f"hf:{path}", "--out", out)
    run("filter", "--manifest", manifest, "--dataset", f"hf:{path}", "--out", out, "--overwrite")
    assert hidden(tmp_path) == []


# ----------------------------------------------------------------------------- 2: output == input


def test_an_output_that_is_an_input_is_refused(store, saved, tmp_path):
    features = tmp_path / "a.h5"
    shutil.copyfile(store, features)
    (tmp_path / "soft.h5").symlink_to(features)
    os.link(features, tmp_path / "hard.h5")
    before = features.read_bytes()
    for out in (features, tmp_path / "soft.h5", tmp_path / "hard.h5", tmp_path / "." / "a.h5"):
        fails("select", "--features", features, "--method", "random", "--out", out, match="destroy an input")
    fails("select", "--features", tmp_path / "soft.h5", "--method", "random", "--out", features,
          match="destroy an input")
    data = load_dataset("digits")
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=data.train.x.numpy(), y_train=data.train.y.numpy(), x_test=data.test.x.numpy(),
             y_test=data.test.y.numpy())
    npz_bytes = npz.read_bytes()
    fails("features", "--dataset", f"npz:{npz}", "--out", npz, match="destroy an input")
    fails("select", "--dataset", f"npz:{npz}", "--method", "random", "--out", npz, match="destroy an input")
    manifest = tmp_path / "m.json"
    run("select", "--features", features, "--method", "random", "--out", manifest)
    manifest_bytes = manifest.read_bytes()
    fails("train", "--manifest", manifest, "--metrics", manifest, match="destroy an input")
    fails("train", "--dynamic", "random", "--log", tmp_path / "x.json", "--metrics", tmp_path / "x.json",
          match="destroy an input")
    path, hf_manifest = saved
    pruned = tmp_path / "pruned"
    run("filter", "--manifest", hf_manifest, "--dataset", f"hf:{path}", "--out", pruned)
    shutil.copyfile(hf_manifest, pruned / "m.json")
    fails("filter", "--manifest", pruned / "m.json", "--dataset", f"hf:{path}", "--out", pruned, "--overwrite",
          match="replacing the folder would delete it")  # a folder output holding its manifest
    assert Manifest.load(pruned / "m.json")
    fails("select", "--dataset", f"hf:{path}", "--feature-column", "x", "--method", "random",
          "--out", path / "m.json", match="overlaps the input folder")
    assert features.read_bytes() == before and npz.read_bytes() == npz_bytes
    assert manifest.read_bytes() == manifest_bytes and Manifest.load(hf_manifest)


# ----------------------------------------------------------------------------- 5: unwritable folder


def test_filter_into_an_unwritable_folder_is_one_line(saved, tmp_path):
    path, manifest = saved
    blocker = tmp_path / "file"
    blocker.write_text("")
    fails("filter", "--manifest", manifest, "--dataset", f"hf:{path}", "--out", blocker / "out",
          match="cannot write")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        fails("filter", "--manifest", manifest, "--dataset", f"hf:{path}", "--out", locked / "out",
              match="cannot write")


# ----------------------------------------------------------------------------- 6: Ctrl-C while committing


def ctrl_c_at(monkeypatch, module, name: str, when):
    """Make ``module.name`` press Ctrl-C (a real SIGINT) once ``when(args)`` holds, after doing its work."""
    original = getattr(module, name)

    def pressed(*args, **kwargs):
        result = original(*args, **kwargs)
        if when(args):
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(module, name, pressed)


@pytest.mark.parametrize("command", [["select", "--method", "random", "--out"],
                                     ["features", "--warmup-epochs", "0", "--out"],
                                     ["train", "--epochs", "1", "--metrics"]])
def test_ctrl_c_right_after_the_final_rename_completes_the_command(command, tmp_path, monkeypatch):
    out = tmp_path / "out"
    ctrl_c_at(monkeypatch, os, "replace", lambda args: Path(args[1]) == out)
    result = runner.invoke(app, [*command, str(out)])
    assert result.exit_code == 0 and "interrupted" not in result.output, result.output
    assert out.is_file() and hidden(tmp_path) == []


def test_ctrl_c_while_filter_replaces_its_output_completes_it(saved, tmp_path, monkeypatch):
    path, manifest = saved
    out = tmp_path / "pruned"
    run("filter", "--manifest", manifest, "--dataset", f"hf:{path}", "--out", out)
    ctrl_c_at(monkeypatch, shutil, "rmtree", lambda args: ".old-" in str(args[0]))
    result = runner.invoke(app, ["filter", "--manifest", str(manifest), "--dataset", f"hf:{path}", "--out", str(out),
                                 "--overwrite"])
    assert result.exit_code == 0 and "interrupted" not in result.output, result.output
    assert hidden(tmp_path) == []


# ----------------------------------------------------------------------------- 3: damaged work, resumed


def _store_bytes(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as file:
        return {k: file[k][...].tobytes() for k in file}


def _interrupted_features(out: Path, monkeypatch, after: int) -> None:
    """`prune features` (1 warm-up epoch, 2 posterior samples) stopped by Ctrl-C after ``after`` row blocks."""
    with monkeypatch.context() as patch:
        stop_features_after(patch, after)
        result = runner.invoke(app, [*FEATURES, "--out", str(out)])
    assert result.exit_code == 130, result.output


FEATURES = ["features", "--warmup-epochs", "1", "--posterior-samples", "2"]


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _scribble(path: Path) -> None:
    with open(path, "r+b") as file:
        file.seek(path.stat().st_size - 64)
        file.write(b"\x7f" * 32)


@pytest.mark.parametrize("name, damage, says", [("grad_logit.npy", _truncate, "recomputing from the start of"),
                                                ("loss_per_epoch.npy", _scribble, "redoing the work from the start")])
def test_resume_recomputes_damaged_work(name, damage, says, tmp_path, monkeypatch):
    from prune.features.partial import partial_path

    reference = tmp_path / "reference.h5"
    run(*FEATURES, "--out", reference)
    out = tmp_path / "store.h5"
    _interrupted_features(out, monkeypatch, after=5)  # 2 warm-up blocks, both of sample 1, 1 of sample 2
    damage(partial_path(out) / name)
    text = " ".join(run(*FEATURES, "--resume", "--out", out).split())
    assert "damaged (checksum differs)" in text and says in text, text
    assert _store_bytes(out) == _store_bytes(reference)


# ----------------------------------------------------------------------------- 4: full disks


def _no_work(monkeypatch):
    import prune.features.build

    def no_work(*args, **kwargs):
        raise AssertionError("the run should have been refused first")

    monkeypatch.setattr(prune.features.build, "warm_start", no_work)


def test_features_checks_free_space_before_any_work(tmp_path, monkeypatch):
    import prune.features.partial

    _no_work(monkeypatch)
    monkeypatch.setattr(prune.features.partial.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10**5))
    fails(*FEATURES, "--out", tmp_path / "s.h5", match="not enough free space")
    assert list(tmp_path.iterdir()) == []


def test_work_folder_space_is_allocated_up_front(tmp_path):
    from prune.features.partial import PartialStore, partial_path

    shape = dict(n=50_000, samples=2, num_classes=10, embedding_dim=64, checkpoints=1, dtype="float32")
    with PartialStore.open(tmp_path / "s.h5", settings={}, resume=False, **shape):
        for array in partial_path(tmp_path / "s.h5").glob("*.npy"):
            info = array.stat()
            assert info.st_blocks * 512 >= info.st_size, array.name  # no holes a full disk could hit (SIGBUS)


def test_a_full_disk_mid_run_is_one_line_and_resumable(tmp_path, monkeypatch):
    import errno

    from prune.features.partial import partial_path

    replace, commits = os.replace, 0

    def full_disk(src, dst, *args, **kwargs):
        nonlocal commits
        if Path(dst).name == "progress.json":
            commits += 1
            if commits > 4:
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return replace(src, dst, *args, **kwargs)

    out = tmp_path / "s.h5"
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", full_disk)
        fails(*FEATURES, "--out", out, match="No space left on device")
    assert partial_path(out).is_dir() and not out.exists()
    text = run(*FEATURES, "--resume", "--out", out)
    assert "resuming" in text
    reference = tmp_path / "reference.h5"
    run(*FEATURES, "--out", reference)
    assert _store_bytes(out) == _store_bytes(reference)


def test_filter_on_a_full_disk_is_one_line(saved, tmp_path, monkeypatch):
    import errno

    import datasets

    path, manifest = saved

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full_disk)
    fails("filter", "--manifest", manifest, "--dataset", f"hf:{path}", "--out", tmp_path / "out",
          match="No space left on device")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- 7: a gzip bomb


def test_an_idx_file_is_never_inflated_past_its_declared_size(tmp_path):
    import gzip
    import struct
    import tracemalloc

    from prune.data.idx import _read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as file:  # says 10 images, inflates to 64 MB
        file.write(struct.pack(">4I", 2051, 10, 28, 28))
        for _ in range(64):
            file.write(bytes(1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(PruneError, match="header says 10 items but it holds more data bytes"):
            _read_idx(path, images=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


# ----------------------------------------------------------------------------- 8: seeds, SOURCE_DATE_EPOCH


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seeds_out_of_range_are_usage_errors(seed, tmp_path, monkeypatch):
    import prune

    monkeypatch.chdir(tmp_path)
    for command in (["select", "--method", "random"], ["features", "--out", "s.h5"], ["train"]):
        result = runner.invoke(app, [*command, "--seed", seed])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "Invalid value for '--seed'" in " ".join(result.output.replace("│", " ").split()), result.output
    fails("bench", "--seeds", f"0,{seed}", "--out", "b", match="--seeds must be an integer from 0 to 4294967295")
    with pytest.raises(PruneError, match="seed must be an integer"):
        prune.select_coreset("digits", "random", seed=int(seed))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("epoch", ["1.5", "abc", "-1", "99999999999999999999"])
def test_a_malformed_source_date_epoch_is_one_line_before_any_work(epoch, tmp_path, monkeypatch):
    _no_work(monkeypatch)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    fails("select", "--out", tmp_path / "m.json", match="SOURCE_DATE_EPOCH must be a whole number of seconds")
    fails("train", "--dynamic", "random", match="SOURCE_DATE_EPOCH must be a whole number of seconds")
    assert list(tmp_path.iterdir()) == []
