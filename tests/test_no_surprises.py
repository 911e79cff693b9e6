"""No surprises (#28): the last ways to lose a file, crash with a traceback, or have bad input
accepted -- each case refused with one line (or working as documented), nothing lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prune.atomic import atomic_path, ensure_writable, save_torch, write_text
from prune.errors import PruneError
from tests import cli
from tests.cli import run

LONG = "n" * 300  # longer than any file system's name limit (255 bytes)


def fails(*args) -> str:
    """The one `error:` line of a command that must fail (exit 2, no traceback)."""
    output = cli.fails(*args)
    assert output.count("error: ") == 1, output
    return output.split("error: ")[1]


@pytest.fixture(scope="module")
def digits_manifest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("manifest") / "digits-random.json"
    run("select", "--method", "random", "--fraction", "0.1", "--out", path)
    return path


# ----------------------------------------------------------------------------- outputs: atomic.py


def test_a_link_as_an_output_is_refused(tmp_path):
    target = tmp_path / "target.json"
    target.write_text("keep")
    (tmp_path / "soft.json").symlink_to(target)
    os.link(target, tmp_path / "hard.json")
    with pytest.raises(PruneError, match="is a symbolic link"):
        ensure_writable(tmp_path / "soft.json")
    with pytest.raises(PruneError, match="other hard link"):
        ensure_writable(tmp_path / "hard.json")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere")
    with pytest.raises(PruneError, match="is a symbolic link"):
        ensure_writable(tmp_path / "dangling.json")
    assert target.read_text() == "keep"


def test_an_output_equal_to_an_input_by_any_path_is_refused(tmp_path):
    checkpoint = tmp_path / "c.pt"
    checkpoint.write_bytes(b"weights")
    (tmp_path / "sub").mkdir()
    for same in (checkpoint, tmp_path / "sub" / ".." / "c.pt", Path(os.path.relpath(checkpoint))):
        with pytest.raises(PruneError, match="which this command also reads"):
            ensure_writable(same, inputs=[checkpoint], overwrite=True)
        with pytest.raises(PruneError, match="which this command also reads"):
            ensure_writable(checkpoint, inputs=[str(same)], overwrite=True)
    assert checkpoint.read_bytes() == b"weights"


def test_a_name_too_long_is_one_line(tmp_path):
    with pytest.raises(PruneError, match="cannot write .*name too long"):
        ensure_writable(tmp_path / LONG)
    with pytest.raises(PruneError, match="cannot write .*name too long"):
        write_text(tmp_path / LONG, "{}")


def test_without_overwrite_an_output_that_appeared_meanwhile_is_not_replaced(tmp_path):
    out = tmp_path / "same.json"
    with pytest.raises(PruneError, match="already exists .another run may have written it meanwhile"):
        with atomic_path(out, overwrite=False) as tmp:
            tmp.write_text("mine")
            out.write_text("the other run's")  # a second run finished first
    assert out.read_text() == "the other run's" and sorted(os.listdir(tmp_path)) == ["same.json"]
    write_text(tmp_path / "new.json", "x", overwrite=False)
    assert (tmp_path / "new.json").read_text() == "x" and os.stat(tmp_path / "new.json").st_nlink == 1
    with atomic_path(out) as tmp:  # overwrite (the default): replaced
        tmp.write_text("mine")
    assert out.read_text() == "mine"


def _writer(out: Path, text: str, barrier, results) -> None:
    try:
        with atomic_path(out, overwrite=False) as tmp:
            tmp.write_text(text)
            barrier.wait()  # both have finished their work; now both commit
        results.put(text)
    except PruneError:
        results.put("refused")


def test_two_runs_writing_one_new_output_at_once_one_is_refused(tmp_path):
    """Two `prune select --out same.json` at once: the first to commit wins, the other is refused."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    out, barrier, results = tmp_path / "same.json", context.Barrier(2), context.Queue()
    workers = [context.Process(target=_writer, args=(out, text, barrier, results)) for text in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    outcome = sorted(results.get(timeout=5) for _ in workers)
    assert outcome[1] == "refused" and out.read_text() == outcome[0], outcome
    assert os.listdir(tmp_path) == ["same.json"]


def test_a_full_disk_while_saving_a_model_is_one_line(tmp_path, monkeypatch):
    import torch

    def full(state, path):
        Path(path).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0\n"
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(PruneError, match="cannot write .*file write failed"):
        save_torch({}, tmp_path / "model.pt")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- prune inspect


@pytest.fixture(scope="module")
def dynamic_log(tmp_path_factory) -> Path:
    """The subset log of a short dynamic run on digits."""
    log = tmp_path_factory.mktemp("log") / "dyn.json"
    run("train", "--dynamic", "random", "--fraction", "0.1", "--epochs", "1", "--batch-size", "64", "--log", log)
    return log


def test_inspect_writes_a_plot_only_when_asked_and_never_replaces_a_file(dynamic_log, tmp_path):
    before = sorted(os.listdir(dynamic_log.parent))
    assert "selection points" in run("inspect", dynamic_log)
    assert sorted(os.listdir(dynamic_log.parent)) == before  # no <log>.counts.png
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    assert "already exists; pass --overwrite" in fails("inspect", dynamic_log, "--plot", victim)
    assert victim.read_text() == "keep"
    assert "which this command also reads" in fails("inspect", dynamic_log, "--plot", dynamic_log, "--overwrite")
    run("inspect", dynamic_log, "--plot", victim, "--overwrite")
    assert victim.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot = tmp_path / "counts.png"
    run("inspect", dynamic_log, "--plot", plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_subset_log_saved_without_overwrite_replaces_nothing(dynamic_log, tmp_path):
    from prune.dynamic import subset_log

    log = subset_log.load(dynamic_log)
    out = tmp_path / "log.json"
    out.write_text("keep")
    with pytest.raises(PruneError, match="already exists"):
        subset_log.save(log, out, overwrite=False)
    assert out.read_text() == "keep"
    subset_log.save(log, out)
    assert subset_log.load(out) == log


def test_inspect_refuses_a_plot_for_a_manifest(digits_manifest, tmp_path):
    assert "--plot applies to subset logs" in fails("inspect", digits_manifest, "--plot", tmp_path / "p.png")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- prune filter


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A small image folder (60 training, 20 test digits) and a random manifest of it."""
    from tests.test_folder import write_tree

    folder = tmp_path_factory.mktemp("images")
    tree = write_tree(folder / "digits", 60, 20)
    manifest = folder / "m.json"
    run("select", "--dataset", f"folder:{tree}", "--method", "random", "--fraction", "0.5", "--out", manifest)
    return tree, manifest


def test_filter_copies_images_unless_link_is_asked(images, tmp_path):
    tree, manifest = images
    run("filter", "--manifest", manifest, "--out", tmp_path / "copied")
    copies = sorted((tmp_path / "copied").rglob("*.png"))
    assert len(copies) == 30 + 20
    assert not any(os.path.samefile(p, tree / p.relative_to(tmp_path / "copied")) for p in copies)
    run("filter", "--manifest", manifest, "--out", tmp_path / "linked", "--link")
    linked = sorted((tmp_path / "linked").rglob("*.png"))
    assert all(os.path.samefile(p, tree / p.relative_to(tmp_path / "linked")) for p in linked)


def test_filter_overwrite_never_replaces_a_plain_file(images, tmp_path):
    tree, manifest = images
    victim = tmp_path / "outds"
    victim.write_text("keep")
    assert "is a file, not a folder prune filter wrote" in fails("filter", "--manifest", manifest, "--out", victim,
                                                                 "--overwrite")
    assert victim.read_text() == "keep"


def test_filter_overwrite_never_replaces_a_plain_file_hf(tmp_path):
    datasets = pytest.importorskip("datasets")
    import numpy as np

    path = tmp_path / "ds"
    datasets.Dataset.from_dict({"x": np.zeros((40, 3), dtype=np.float32), "label": [0, 1] * 20}).save_to_disk(str(path))
    manifest = tmp_path / "m.json"
    run("select", "--dataset", f"hf:{path}", "--feature-column", "x", "--method", "random", "--out", manifest)
    victim = tmp_path / "outds"
    victim.write_text("keep")
    assert "is a file, not a folder save_to_disk wrote" in fails("filter", "--manifest", manifest, "--dataset",
                                                                 f"hf:{path}", "--out", victim, "--overwrite")
    assert victim.read_text() == "keep"
    assert "--link applies to folder:" in fails("filter", "--manifest", manifest, "--dataset", f"hf:{path}",
                                                "--out", tmp_path / "o", "--link")


# ----------------------------------------------------------------------------- prune features --resume


def _store_bytes(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as file:
        return {k: file[k][...].tobytes() for k in file} | {f"@{k}": str(file.attrs[k]) for k in file.attrs}


def test_resume_after_a_kill_while_the_work_is_copied_into_the_store(tmp_path, monkeypatch):
    """Killed while it copies the finished work into the store: --resume copies it (no pass runs again,
    no IndexError) and gives the store an uninterrupted run gives."""
    from contextlib import contextmanager

    import torch

    import prune.features.build
    import prune.features.partial
    from prune.data import load_dataset
    from prune.features import FeatureConfig, PosteriorConfig, build_store
    from prune.features.partial import partial_path
    from prune.training import TrainConfig

    data = load_dataset("digits")
    config = FeatureConfig(model="mlp", warmup=TrainConfig(epochs=1), posterior=PosteriorConfig(samples=2))

    def build(path, **kwargs):
        return build_store(data, data.train.y, path, config, seed=0, device=torch.device("cpu"), **kwargs)

    build(tmp_path / "reference.h5")
    real = prune.features.partial.create_store

    @contextmanager
    def killed(*args, **kwargs):
        with real(*args, **kwargs) as writer:
            yield writer
            raise KeyboardInterrupt  # the copy is cut short, as a kill would cut it

    out = tmp_path / "store.h5"
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(prune.features.partial, "create_store", killed)
        build(out)
    assert not out.exists() and partial_path(out).is_dir()
    passes = []
    original = prune.features.build.extract_batches
    monkeypatch.setattr(prune.features.build, "extract_batches",
                        lambda *args, **kwargs: passes.append(len(args[1])) or original(*args, **kwargs))
    build(out, resume=True)
    assert sum(passes) == 0  # nothing computed again
    assert _store_bytes(out) == _store_bytes(tmp_path / "reference.h5")
    assert not partial_path(out).exists()


def test_a_full_disk_while_the_store_is_written_is_one_line_and_resumable(tmp_path, monkeypatch):
    """HDF5's writer failing (OSError, or a RuntimeError) while the finished work is copied into the
    store: one line, nothing at --out, the work kept; --resume then writes the store."""
    import h5py

    from prune.features.partial import partial_path
    from prune.features.store import FeatureStore

    out = tmp_path / "s.h5"
    for failure in (OSError(28, "No space left on device"), RuntimeError("Can't decrement id ref count")):
        def full(*args, **kwargs):
            raise failure

        with monkeypatch.context() as patch:
            patch.setattr(h5py.File, "create_dataset", full)
            text = fails("features", "--warmup-epochs", "0", "--resume" if partial_path(out).exists() else "--no-resume",
                         "--out", out)
        assert "the work done is kept" in text and "--resume" in text, text
        assert not out.exists() and partial_path(out).is_dir()
    run("features", "--warmup-epochs", "0", "--resume", "--out", out)
    with FeatureStore.open(out) as store:
        assert store.num_examples == 1437


def test_a_full_disk_while_the_warm_model_is_saved_keeps_the_work(tmp_path, monkeypatch):
    import torch

    from prune.features.partial import partial_path

    def full(state, path):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    text = fails("features", "--warmup-epochs", "1", "--out", tmp_path / "s.h5")
    assert "file write failed" in text and "--resume" in text
    assert partial_path(tmp_path / "s.h5").is_dir() and not (tmp_path / "s.h5").exists()


# ----------------------------------------------------------------------------- stores


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory) -> Path:
    """A digits store without label noise (no warm-up)."""
    path = tmp_path_factory.mktemp("store") / "digits.h5"
    run("features", "--warmup-epochs", "0", "--out", path)
    return path


def test_a_store_is_a_context_manager_that_closes_its_file(clean_store):
    from prune.features.store import FeatureStore

    with FeatureStore.open(clean_store) as store:
        assert store.grad_logit[[0, 1]].shape[0] == 2
        file = store.grad_logit.file
        assert file.id.valid
    assert not file.id.valid
    store.close()  # twice: nothing happens
    again = FeatureStore.open(clean_store)
    again.close()
    assert not again.embedding.file.id.valid


def test_a_store_whose_labels_contradict_its_fingerprint_is_refused(clean_store, tmp_path):
    import h5py
    import shutil

    store = tmp_path / "s.h5"
    shutil.copyfile(clean_store, store)
    with h5py.File(store, "a") as file:
        labels = file["labels"][...]
        labels[[0, 1]] = labels[[1, 0]] if labels[0] != labels[1] else (labels[[0, 1]] + 1) % 10
        file["labels"][...] = labels
    assert "its labels do not match its fingerprint" in fails("select", "--features", store, "--method", "random",
                                                              "--out", tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_a_fifo_is_named_as_a_fifo_not_as_missing(tmp_path):
    fifo = tmp_path / "m.json"
    os.mkfifo(fifo)
    assert "is a pipe (FIFO)" in fails("inspect", fifo)
    assert "is a pipe (FIFO)" in fails("train", "--manifest", fifo, "--epochs", "1")
    assert "is a pipe (FIFO)" in fails("select", "--features", fifo, "--method", "random", "--out", tmp_path / "o.json")


# ----------------------------------------------------------------------------- manifests


def test_manifest_save_refuses_an_existing_file_unless_overwrite(digits_manifest, tmp_path):
    from prune.manifest import Manifest

    manifest = Manifest.load(digits_manifest)
    out = tmp_path / "m.json"
    out.write_text("keep")
    with pytest.raises(PruneError, match="already exists"):
        manifest.save(out)
    assert out.read_text() == "keep"
    manifest.save(out, overwrite=True)
    assert Manifest.load(out).to_dict() == manifest.to_dict()


def test_a_damaged_fingerprint_is_not_called_a_shuffle(digits_manifest):
    from prune.manifest import Manifest

    manifest = Manifest.load(digits_manifest)
    counts = manifest.dataset["class_counts"]
    real = manifest.dataset["fingerprint"]
    manifest.dataset["fingerprint"] = real[:-3] + "xyz"
    with pytest.raises(PruneError, match="label fingerprint .* is damaged") as error:
        manifest.check_dataset(fingerprint=real, num_examples=1437, class_counts=counts)
    assert "shuffled" not in str(error.value)


# ----------------------------------------------------------------------------- data sources


def test_an_npz_with_no_features_per_example_is_refused(tmp_path):
    import numpy as np

    path = tmp_path / "empty-features.npz"
    np.savez(path, x_train=np.zeros((20, 0), np.float32), y_train=np.arange(20) % 2,
             x_test=np.zeros((4, 0), np.float32), y_test=np.arange(4) % 2)
    assert "0 features per example" in fails("select", "--dataset", f"npz:{path}", "--method", "random",
                                             "--out", tmp_path / "m.json")
    assert sorted(os.listdir(tmp_path)) == ["empty-features.npz"]


@pytest.mark.parametrize("prefix", ["npz:", "folder:"])
def test_a_source_name_too_long_is_one_line(prefix, tmp_path):
    text = fails("select", "--dataset", f"{prefix}{tmp_path / LONG}", "--method", "random", "--out", tmp_path / "m.json")
    assert "name too long" in text
    assert "name too long" in fails("inspect", tmp_path / LONG)
    assert "name too long" in fails("select", "--features", tmp_path / LONG, "--method", "random",
                                    "--out", tmp_path / "m.json")


def test_a_link_loop_in_an_image_folder_is_refused(images, tmp_path):
    import shutil

    tree, _ = images
    copy = tmp_path / "digits"
    shutil.copytree(tree, copy)
    (copy / "train" / "digit-3" / "again").symlink_to(copy / "train" / "digit-3")
    text = fails("select", "--dataset", f"folder:{copy}", "--method", "random", "--out", tmp_path / "m.json")
    assert "would be counted more than once" in text
    (copy / "train" / "digit-3" / "again").unlink()
    (copy / "train" / "digit-3" / "elsewhere").symlink_to(copy / "test" / "digit-3")  # no loop: followed
    from prune.data import load_dataset

    assert len(load_dataset(f"folder:{copy}").train) == 60 + len(list((copy / "test" / "digit-3").iterdir()))


class _InterruptedImport:
    """A meta-path finder that raises KeyboardInterrupt when ``prune.cli.commands`` is imported (Ctrl-C while torch loads)."""

    def find_spec(self, name, path=None, target=None):
        if name == "prune.cli.commands":
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_the_app_imports_exits_130_without_traceback(monkeypatch, capsys):
    import sys

    import prune.cli

    monkeypatch.delitem(sys.modules, "prune.cli.commands", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as exit_:
        prune.cli.main()
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("command", ["", "features", "select", "train", "inspect", "filter", "bench"])
def test_help_shows_no_bool_metavar(command):
    output = run(*filter(None, [command]), "--help")
    assert "--help" in output and "<bool>" not in output


def test_inspect_split_help_says_what_inspect_does_with_it():
    import typer

    from prune.cli import app

    inspect = typer.main.get_command(app).commands["inspect"]
    (split,) = [param for param in inspect.params if "--split" in param.opts]
    assert "train on" not in split.help and "check against the manifest" in split.help


@pytest.mark.parametrize("command", [["select", "--out", "m.json"], ["features", "--out", "s.h5"], ["train"]])
@pytest.mark.parametrize("content", [b"hello\n", b"\x80\x02}q\x00.", bytes(range(256))])
def test_a_checkpoint_that_is_not_torch_saves_is_one_line(tmp_path, monkeypatch, command, content):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.pt").write_bytes(content)
    output = fails(*command, "--checkpoint", "c.pt")
    assert "checkpoint" in output and ("torch.save" in output or "state dict" in output)
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


def test_an_epochs_typo_is_not_told_as_a_disk_problem_only(tmp_path):
    output = fails("features", "--warmup-epochs", "100000000", "--out", tmp_path / "s.h5")
    assert "not enough free space" in output and "is --warmup-epochs what you meant?" in output
    assert os.listdir(tmp_path) == []
