"""The `prune` command line (``prune.cli.commands``); ``main`` is the console script.

The app is imported inside ``main``, so that Ctrl-C while torch loads (a second or more) exits 130
with one line, as it does inside a command, instead of a traceback. ``from prune.cli import app``
still gives the app.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from prune.cli.commands import app
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    app(prog_name="prune")  # also under `python -m prune`: completion scripts and usage name `prune`


def __getattr__(name: str):
    if name == "app":
        from prune.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
