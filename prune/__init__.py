"""prune: shrink a training set to a small, high-value coreset and record it as a manifest.

From Python (``prune.api``; the configs are ``prune.config``'s)::

    import prune
    data = prune.DataSpec("digits")
    manifest = prune.select(data, prune.MethodConfig("craig"), prune.Budget(fraction=0.1), seed=0)
    manifest.save("manifests/digits-craig-0.1.json")
    result = prune.train(data, prune.TrainConfig(epochs=20), manifest=manifest)
    tuned = prune.train(data, manifest=manifest, model=prune.ModelSpec("mlp", checkpoint="mlp.pt"))  # from weights
    small = prune.Manifest.load("manifests/hf.json").apply(hf_dataset)   # a datasets.Dataset
"""

__version__ = "0.1.0"  # first: prune.manifest and prune.features.store import it

_EXPORTS = {
    "Manifest": "prune.manifest",
    "PruneError": "prune.errors",
    "FeatureStore": "prune.features",
    "load_dataset": "prune.data",
    **dict.fromkeys(("plan", "select", "select_coreset", "train", "TrainResult"), "prune.api"),
    **dict.fromkeys(("DataSpec", "WarmupConfig", "PosteriorConfig", "MethodConfig", "DifficultyConfig", "Budget",
                     "TrainConfig", "DynamicConfig"), "prune.config"),
    "BenchConfig": "prune.bench",
    "ModelSpec": "prune.training",
}
_MODULES = ("features", "bench")  # callable modules: prune.features(...) and prune.bench(...) (prune.callable_module)
__all__ = [*_EXPORTS, *_MODULES, "__version__"]


def __getattr__(name: str):
    """Import the public names on first use, so ``import prune`` stays light (no torch)."""
    import importlib

    if name in _MODULES:
        return importlib.import_module(f"prune.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prune' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
