"""No surprises (#28): the last ways to lose a file, crash with a traceback, or have bad input
accepted -- each case refused with one line (or working as documented), nothing lost."""

from __future__ import annotations

import errno
import json
import os
import threading
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
    with pytest.raises(PruneError, match="appeared while this command ran"):
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
