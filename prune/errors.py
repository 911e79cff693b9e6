"""The one exception type users see: a problem with their input, told in one line."""

from __future__ import annotations

import re
from collections.abc import Mapping

_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)(?![\w-])")


class PruneError(Exception):
    """Bad input or state the user can fix. The CLI prints ``error: <message>`` and exits 2.

    A check that both the command line and Python callers reach (the configs' ``__post_init__``) words its
    message with the options' flags and passes ``parameters``: True, or a mapping of the flags whose parameter
    is named otherwise (``{"--dynamic": "kind"}``). Then ``str(error)``, what a Python caller reads, names the
    parameters (``--batch-size`` reads ``batch_size``), and ``cli_message``, what the commands print, keeps
    the flags: ``Budget(fraction=2)`` raises "fraction must be in (0, 1], got 2; ...", ``prune select
    --fraction 2`` says "--fraction must be in (0, 1], got 2; ...". Without ``parameters`` both are the message.
    Where the command line's wording names no flag to rename (one check behind ``--epochs`` and
    ``--warmup-epochs`` says "the number of epochs"), ``python`` is the Python caller's wording instead.
    """

    def __init__(self, message: str = "", *, parameters: bool | Mapping[str, str] = False, python: str | None = None):
        super().__init__(message)
        self.cli_message = message
        self.parameters = dict(parameters) if isinstance(parameters, Mapping) else bool(parameters)
        self.python = python

    def __str__(self) -> str:
        if self.python is not None:
            return self.python
        if not self.parameters:
            return self.cli_message
        renamed = self.parameters if isinstance(self.parameters, dict) else {}
        return _FLAG.sub(lambda flag: renamed.get(flag[0], flag[1].replace("-", "_")), self.cli_message)

    def __reduce__(self):  # pickled whole (torchrun gathers errors between processes)
        return _rebuild, (type(self), self.cli_message, self.parameters, self.python)


def _rebuild(cls, message: str, parameters, python=None):
    return cls(message, parameters=parameters, python=python)
