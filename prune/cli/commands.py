"""The Typer app ``app``: one module per command, registered here.

Every command runs behind ``user_errors``: a ``PruneError`` prints one line ``error: ...`` and
exits 2, Ctrl-C exits 130, and a command's ``--quiet`` turns its progress bars off.
"""

from __future__ import annotations

import functools

import typer
from rich.markup import escape

from prune import __version__
from prune.cli.bench import bench_command
from prune.cli.features import features_command
from prune.cli.filter import filter_command
from prune.cli.inspect import inspect_command
from prune.cli.select import select_command
from prune.cli.train import train_command
from prune.errors import PruneError
from prune.training import console, quiet

class _Help:
    """Flags (``--help``, ``--install-completion``, ...) without the ``<bool>`` metavar typer's rich help gives them."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params


class Command(_Help, typer.core.TyperCommand):
    pass


class Group(_Help, typer.core.TyperGroup):
    pass


app = typer.Typer(cls=Group, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Shrink a training set to a coreset and write the choice down as a manifest.")


def show_version(requested: bool) -> None:
    if requested:
        typer.echo(f"prune {__version__}")
        raise typer.Exit()


@app.callback()
def prune_options(version: bool = typer.Option(False, "--version", metavar="", is_eager=True, callback=show_version,
                                               help="Print prune's version and exit.")):
    """Shrink a training set to a coreset and write the choice down as a manifest."""


def user_errors(command):
    """Turn PruneError into one line on stderr and exit code 2 (no traceback); Ctrl-C exits 130.

    The message is printed as plain text: it may quote the user's files (``[/x]`` is no markup). It names the
    options by their flags (``PruneError.cli_message``), where a Python caller reads the parameters' names.
    The command's ``quiet`` option (``--quiet``), where it has one, is applied here.
    """

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            with quiet(kwargs.get("quiet", False)):
                return command(*args, **kwargs)
        except PruneError as err:
            console.print(f"[bold red]error:[/] {escape(err.cli_message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:  # outputs are written atomically: nothing half-written is left
            console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return run


app.command("features", cls=Command)(user_errors(features_command))
app.command("select", cls=Command)(user_errors(select_command))
app.command("train", cls=Command)(user_errors(train_command))
app.command("inspect", cls=Command)(user_errors(inspect_command))
app.command("filter", cls=Command)(user_errors(filter_command))
app.command("bench", cls=Command)(user_errors(bench_command))
