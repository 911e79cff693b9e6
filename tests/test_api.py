"""The Python API: one function per job over frozen configs checked at construction."""

import pytest
import torch

import prune
from prune.errors import PruneError


def test_configs_are_checked_once_at_construction():
    with pytest.raises(PruneError, match="^unknown method 'magic'"):
        prune.MethodConfig("magic")
    with pytest.raises(PruneError, match="^fraction must be in"):
        prune.Budget(fraction=1.5)
    with pytest.raises(PruneError, match="exactly one of"):
        prune.Budget(fraction=0.1, count=3)
    with pytest.raises(PruneError, match="must name a data source"):
        prune.DataSpec("")
    with pytest.raises(PruneError, match="^samples must be a whole number"):
        prune.PosteriorConfig(samples=0)
    assert prune.Budget().fraction == 0.1
    assert prune.MethodConfig("random").stage() == prune.DifficultyConfig(drop_hard=0)


def test_features_select_train_from_python(tmp_path):
    data = prune.DataSpec("digits")
    store = prune.features(data, prune.WarmupConfig(epochs=1), prune.PosteriorConfig(samples=2),
                           out=tmp_path / "s.h5", seed=0)
    with store:
        assert store.num_examples == 1437
    chosen = prune.select(data, prune.MethodConfig("craig"), prune.Budget(fraction=0.1), features=tmp_path / "s.h5")
    again = prune.select_coreset("digits", "craig", fraction=0.1, features=tmp_path / "s.h5")
    assert chosen.to_dict() | {"created_at": 0} == again.to_dict() | {"created_at": 0}
    plan = prune.plan(data, prune.MethodConfig("craig"), prune.Budget(fraction=0.1), features=tmp_path / "s.h5")
    assert sum(plan.budgets) == len(chosen) == 144
    result = prune.train(data, prune.TrainConfig(epochs=1), manifest=chosen)
    assert result.train_examples == 144 and 0 <= result.test_accuracy <= 1
    assert isinstance(result.model, torch.nn.Module) and result.model_name == "mlp"


def test_label_noise_with_a_store_is_refused(tmp_path):
    with pytest.raises(PruneError, match="drop --label-noise"):
        prune.select_coreset("digits", "craig", features=tmp_path / "s.h5", label_noise=0.2)


@pytest.mark.parametrize("settings, named", [
    ({"warmup": prune.WarmupConfig(lr=0.1)}, "^warmup sets how features are computed"),
    ({"posterior": prune.PosteriorConfig(samples=8)}, "^posterior sets how features are computed"),
    ({"warmup": prune.WarmupConfig(epochs=2), "posterior": prune.PosteriorConfig(sigma=0.1)},
     "^warmup and posterior set how features are computed"),
    ({"data": prune.DataSpec("digits", label_noise=0.2)}, "^data's label_noise sets how features are computed"),
])
def test_settings_a_store_fixes_are_refused_not_ignored(settings, named, tmp_path):
    for job in (prune.select, prune.plan):  # refused before the store is opened (it need not exist)
        with pytest.raises(PruneError, match=named):
            job(**{"data": None, **settings}, method=prune.MethodConfig("craig"), features=tmp_path / "s.h5")


def test_an_empty_dataset_name_is_refused_not_read_as_digits():
    with pytest.raises(PruneError, match="must name a data source"):
        prune.select_coreset("", "random")
