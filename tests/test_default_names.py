"""The default manifest name (issue 28, part B): named after the data, a folder: source after its folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import run


@pytest.mark.parametrize("source, stem", [("folder:/data/cifar10", "cifar10"), ("folder:/data/cifar10/", "cifar10"),
                                          ("npz:/x/y.npz", "y"), ("hf:/x/ds", "ds"), ("fashion-mnist", "fashion-mnist")])
def test_the_default_manifest_is_named_after_the_data(source, stem):
    from prune.cli.select import default_out

    assert default_out(source, None, "herding", 0.1, None) == Path("manifests") / f"{stem}-herding-0.1.json"


def test_the_default_manifest_of_an_image_folder_is_the_folders_name(tmp_path, monkeypatch):
    from tests.test_folder import write_tree

    root = write_tree(tmp_path / "cifar10", n_train=40, n_test=10)
    monkeypatch.chdir(tmp_path)
    out = run("select", "--dataset", f"folder:{root}", "--method", "random", "--dry-run")
    assert "manifests/cifar10-random-0.1.json" in " ".join(out.split())
