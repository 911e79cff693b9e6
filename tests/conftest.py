"""Shared fixtures: real data (scikit-learn digits, a Fashion-MNIST slice) and small stores."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

#: the folder of the Fashion-MNIST IDX files (.gz) the tests read: $PRUNE_TEST_DATA/fashion-mnist
FASHION_ROOT = Path(os.environ.get("PRUNE_TEST_DATA", "data")).resolve() / "fashion-mnist"
#: what a skipped test says: where the files were looked for and how to get them
FASHION_MISSING = (f"Fashion-MNIST not found in {FASHION_ROOT}: put the four IDX .gz files from "
                   "https://github.com/zalandoresearch/fashion-mnist (data/fashion/) in a folder fashion-mnist/ "
                   "and point PRUNE_TEST_DATA at its parent")


def pytest_configure(config):
    """Hypothesis keeps its example database in pytest's cache (or a temporary folder), not in
    ``.hypothesis/`` of the folder pytest runs from."""
    from hypothesis.configuration import set_hypothesis_home_dir

    cache = getattr(config, "cache", None)
    set_hypothesis_home_dir(cache.mkdir("hypothesis") if cache else tempfile.mkdtemp(prefix="prune-hypothesis-"))


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tests use tiny models, where a second thread costs more in hand-offs than it gains."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def pinned_time(monkeypatch):
    """Pin manifests' creation time so runs can be compared byte for byte; ignore the user's data folder."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.delenv("PRUNE_DATA_ROOT", raising=False)


@pytest.fixture(scope="session")
def fashion_slice(tmp_path_factory) -> Path:
    """The first 2000 training and 500 test images of Fashion-MNIST, as an npz source."""
    if not (FASHION_ROOT / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(FASHION_MISSING)
    from prune.data.idx import _read_idx

    path = tmp_path_factory.mktemp("fashion") / "fashion-slice.npz"
    np.savez(
        path,
        x_train=_read_idx(FASHION_ROOT / "train-images-idx3-ubyte.gz", images=True)[:2000],
        y_train=_read_idx(FASHION_ROOT / "train-labels-idx1-ubyte.gz", images=False)[:2000],
        x_test=_read_idx(FASHION_ROOT / "t10k-images-idx3-ubyte.gz", images=True)[:500],
        y_test=_read_idx(FASHION_ROOT / "t10k-labels-idx1-ubyte.gz", images=False)[:500],
    )
    return path


@pytest.fixture
def terminal(monkeypatch):
    """prune's console as if on a terminal (progress bars drawn), recorded: ``terminal.getvalue()``."""
    import io

    from rich.console import Console

    import prune.training

    out = io.StringIO()
    monkeypatch.setattr(prune.training, "console", Console(file=out, force_terminal=True, width=160))
    return out
