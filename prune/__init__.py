"""prune: shrink a training set to a small, high-value coreset and record it as a manifest.

From Python::

    import prune
    manifest = prune.select_coreset("digits", "craig", fraction=0.1, seed=0)
    manifest.save("manifests/digits-craig-0.1.json")
    small = prune.Manifest.load("manifests/hf.json").apply(hf_dataset)   # a datasets.Dataset
"""

__version__ = "0.1.0"  # first: prune.manifest and prune.features.store import it

__all__ = ["Manifest", "PruneError", "load_dataset", "select_coreset", "__version__"]

_EXPORTS = {
    "Manifest": "prune.manifest",
    "PruneError": "prune.errors",
    "load_dataset": "prune.data",
    "select_coreset": "prune.api",
}


def __getattr__(name: str):
    """Import the public names on first use, so ``import prune`` stays light (no torch)."""
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prune' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
