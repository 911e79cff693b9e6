"""Manifests in plain PyTorch: ``Manifest.subset`` (a checked ``Subset``) and ``Manifest.sampler`` (over gamma)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset, WeightedRandomSampler

from prune.data import load_dataset
from prune.errors import PruneError
from prune.manifest import Manifest


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def manifest(digits):
    indices = torch.arange(0, 1437, 7)
    return Manifest(indices=indices.numpy(), weights=(indices % 3 + 1).double().numpy(), dataset=digits.record(),
                    method={"name": "test"}, budget={"count": len(indices)},
                    per_class=torch.bincount(digits.train.y[indices], minlength=10).tolist(), seed=0)


class Targets(torch.utils.data.Dataset):
    """A torchvision-style dataset: labels in ``targets``, items (image, label)."""

    def __init__(self, x, y):
        self.x, self.targets = x, y.tolist()

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.x[i], self.targets[i]


def test_subset_is_checked_and_holds_the_manifest_rows(digits, manifest):
    x, y = digits.train.x, digits.train.y
    for dataset in (TensorDataset(x, y), Targets(x, y)):
        subset = manifest.subset(dataset)
        assert isinstance(subset, Subset) and subset.indices == manifest.indices.tolist()
        assert torch.equal(subset[3][0], x[manifest.indices[3]])
    plain = [(x[i], int(y[i])) for i in range(len(y))]  # labels read as dataset[i][1]
    assert manifest.subset(plain).indices == manifest.indices.tolist()
    with pytest.raises(PruneError, match="order differs"):
        manifest.subset(TensorDataset(x, y.flip(0)))
    with pytest.raises(PruneError, match="size differs"):
        manifest.subset(TensorDataset(x[:100], y[:100]))
    with pytest.warns(UserWarning, match="continuing because of --force"):
        manifest.subset(TensorDataset(x, y.flip(0)), force=True)
    with pytest.raises(PruneError, match="labels differ"):
        manifest.subset(TensorDataset(x), labels=(y + 1) % 10)


def test_sampler_draws_subset_positions_in_proportion_to_gamma(digits, manifest):
    sampler = manifest.sampler(num_samples=60_000, generator=torch.Generator().manual_seed(0))
    assert isinstance(sampler, WeightedRandomSampler)
    drawn = torch.tensor(list(sampler))
    assert drawn.min() >= 0 and drawn.max() < len(manifest)
    by_weight = {w: (drawn.unsqueeze(1) == torch.nonzero(torch.from_numpy(manifest.weights) == w).flatten()).sum()
                 for w in (1.0, 2.0, 3.0)}
    share = {w: by_weight[w].item() / len(drawn) for w in by_weight}
    total = manifest.weights.sum()
    for w in share:
        assert share[w] == pytest.approx(w * (manifest.weights == w).sum() / total, abs=0.01)
    loader = DataLoader(manifest.subset(TensorDataset(digits.train.x, digits.train.y)), batch_size=32,
                        sampler=manifest.sampler())
    assert sum(len(batch[1]) for batch in loader) == len(manifest)
    empty = Manifest(indices=[], weights=[], dataset=manifest.dataset, method={"name": "test"}, budget={},
                     per_class=[0] * 10)
    with pytest.raises(PruneError, match="no example with a positive weight"):
        empty.sampler()
