"""``prune.features(...)`` and ``prune.bench(...)``: the API functions share their names with the packages that
implement them, so those modules are made callable, each forwarding the call to its function in ``prune.api``."""

from __future__ import annotations

import importlib
import sys
import types


class CallableModule(types.ModuleType):
    """A module whose call is ``prune.api.<name>(...)`` (``__call__`` must be defined on the module's type)."""

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module("prune.api"), self.__name__.rpartition(".")[2])(*args, **kwargs)


def make_callable(name: str) -> None:
    """Let the module ``name`` (``prune.features``, ``prune.bench``) be called as ``prune.api``'s function of its name."""
    sys.modules[name].__class__ = CallableModule
