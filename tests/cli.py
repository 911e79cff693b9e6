"""prune's command line run in-process, as the tests run it, and a Ctrl-C in the middle of its feature passes."""

from __future__ import annotations

from typer.testing import CliRunner

from prune.cli import app

runner = CliRunner()


def run(*args) -> str:
    """The output of a command that must succeed."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def fails(*args) -> str:
    """The output of a command that must fail with exit code 2 and no traceback, rich's line wrapping undone."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def stop_features_after(patch, after: int) -> None:
    """Through ``patch`` (a monkeypatch), make the feature passes raise KeyboardInterrupt, as Ctrl-C
    would, once ``after`` row blocks have been computed."""
    import prune.features.build

    original, seen = prune.features.build.extract_batches, 0

    def interrupted(*args, **kwargs):
        nonlocal seen
        for batch in original(*args, **kwargs):
            seen += 1
            if seen > after:
                raise KeyboardInterrupt
            yield batch

    patch.setattr(prune.features.build, "extract_batches", interrupted)
