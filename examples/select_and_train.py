"""prune from Python: compute features once, compare methods at one budget, train on each.

    python examples/select_and_train.py            # scikit-learn digits, about a minute on a CPU
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from prune.data import load_dataset
from prune.features import FeatureConfig, FeatureStore, PosteriorConfig, build_store
from prune.models import build_model
from prune.selection import Candidates, select
from prune.training import TrainConfig, evaluate, fit, seed_everything


def main(fraction: float = 0.1, seed: int = 0) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset("digits")
    config = FeatureConfig(model="mlp", warmup=TrainConfig(epochs=5), posterior=PosteriorConfig(samples=4))
    with tempfile.TemporaryDirectory() as tmp:
        path = build_store(data, data.train.y, Path(tmp) / "digits.h5", config, seed=seed, device=device)
        candidates = Candidates.from_store(FeatureStore.open(path))
    for method in ("random", "herding", "clean", "ccs", "craig", "adacore", "lcmat", "ensemble", "crest"):
        manifest = select(candidates, method, fraction=fraction, seed=seed)
        subset = torch.from_numpy(manifest.indices)
        seed_everything(seed)
        model = build_model("mlp", data.input_shape, data.num_classes)
        fit(model, data.train.x[subset], data.train.y[subset], TrainConfig(epochs=30), device=device, seed=seed)
        accuracy = evaluate(model, data.test.x, data.test.y, device=device)["accuracy"]
        print(f"{method:9s} {len(subset):4d} examples  test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
