"""Named random streams: distinct, reproducible, and the plain-seed streams equal to the seed."""

import pytest
import torch

from prune import random_streams


def test_every_stream_has_its_own_seed():
    paths = [path for path in random_streams.STREAMS.values() if path]
    assert len(set(paths)) == len(paths)  # augment and adacore's Hessian batches once shared stream 6
    seeds = {random_streams.stream_seed(0, name) for name, path in random_streams.STREAMS.items() if path}
    assert len(seeds) == len(paths)


def test_a_generator_repeats_for_the_same_seed_and_index_only():
    draw = lambda *args: torch.randperm(100, generator=random_streams.generator(*args))
    assert torch.equal(draw(3, "perturbation", 1), draw(3, "perturbation", 1))
    assert not torch.equal(draw(3, "perturbation", 1), draw(3, "perturbation", 2))
    assert not torch.equal(draw(3, "perturbation", 1), draw(4, "perturbation", 1))


def test_the_plain_streams_are_the_seed_itself():
    assert random_streams.stream_seed(12, "selection") == 12 == random_streams.stream_seed(12, "shuffle")


def test_an_unknown_stream_is_a_key_error():
    with pytest.raises(KeyError):
        random_streams.stream_seed(0, "nope")
