"""Manifests in plain PyTorch: ``Manifest.subset`` (a checked ``Subset``) and ``Manifest.sampler`` (over gamma)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

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


def test_sampler_gives_each_rank_its_share_of_the_subset_per_epoch(digits, manifest):
    subset = set(manifest.indices.tolist())
    samplers = [manifest.sampler(num_replicas=3, rank=r, seed=5) for r in range(3)]
    shares = [list(s) for s in samplers]
    assert all(len(share) == len(samplers[0]) == -(-len(manifest) // 3) for share in shares)
    assert set().union(*map(set, shares)) == subset  # every index of the subset, indices into the whole data
    assert sum(map(len, shares)) - len(subset) < 3  # padded by at most num_replicas - 1 repeats
    for sampler in samplers:
        sampler.set_epoch(1)
    assert [list(s) for s in samplers] != shares  # a new order each epoch, the same on every rank
    assert [list(s) for s in samplers] == [list(s) for s in samplers]
    loader = DataLoader(TensorDataset(digits.train.x, digits.train.y), batch_size=32, sampler=manifest.sampler())
    assert sum(len(batch[1]) for batch in loader) == len(manifest)
    with pytest.raises(PruneError, match="rank must be in"):
        manifest.sampler(num_replicas=2, rank=2)


def test_weighted_sampler_draws_in_proportion_to_gamma(manifest):
    drawn = []
    sampler = manifest.sampler(weighted=True)
    for epoch in range(200):
        sampler.set_epoch(epoch)
        drawn += list(sampler)
    gamma = dict(zip(manifest.indices.tolist(), manifest.weights.tolist()))
    total = manifest.weights.sum()
    for w in (1.0, 2.0, 3.0):
        share = sum(gamma[i] == w for i in drawn) / len(drawn)
        assert share == pytest.approx(w * (manifest.weights == w).sum() / total, abs=0.01)
    empty = Manifest(indices=[], weights=[], dataset=manifest.dataset, method={"name": "test"}, budget={},
                     per_class=[0] * 10)
    with pytest.raises(PruneError, match="no example with a positive weight"):
        empty.sampler(weighted=True)
