"""examples/make_tracks.py: the tracks data set (imbalanced classes of near-duplicate frames) that
prune reads as npz:, and the count of tracks a manifest covers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from prune.data import load_dataset
from tests.test_folder import write_tree

SCRIPT = Path(__file__).parents[1] / "examples" / "make_tracks.py"


def _module():
    spec = importlib.util.spec_from_file_location("make_tracks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tracks_are_imbalanced_near_duplicates_and_prune_reads_them(tmp_path):
    tracks = _module()
    root = write_tree(tmp_path / "digits", n_train=300, n_test=50)
    out = tmp_path / "tracks.npz"
    summary = tracks.build(root, out, objects=20, frames=(3, 5), max_shift=1, seed=0)
    arrays = np.load(out)
    per_class = np.asarray(summary["objects_per_class"])
    assert per_class.max() == 20 and per_class.min() == 2  # 10x between the largest and the smallest class
    track, y = arrays["track_train"], arrays["y_train"]
    sizes = np.bincount(track)
    assert len(sizes) == per_class.sum() and sizes.min() >= 3 and sizes.max() <= 5
    assert all(len(np.unique(y[track == t])) == 1 for t in range(len(sizes)))  # one class per track
    first = arrays["x_train"][track == 0].astype(float)
    assert np.abs(first - first[0]).mean() < np.abs(arrays["x_train"].astype(float) - first[0]).mean()
    data = load_dataset(f"npz:{out}")
    assert len(data.train) == len(y) and len(data.test) == 50

    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"indices": np.flatnonzero(track < 3).tolist()}))
    assert tracks.coverage(manifest, out) == (3, len(sizes))
    again = tmp_path / "again.npz"
    tracks.build(root, again, objects=20, frames=(3, 5), max_shift=1, seed=0)
    assert again.read_bytes() == out.read_bytes()  # seeded: the same file
