"""Write-then-rename, so an interrupted run never leaves a file that looks complete."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prune.errors import PruneError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name starts with a dot and ends in ``.tmp-<pid>``, so a killed run leaves
    only an obviously partial file (or folder) behind, never one at ``path``; the next write of
    ``path`` removes it (``remove_leftovers``).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def remove_leftovers(final: Path) -> None:
    """Remove the temporary siblings ``.NAME.tmp-<pid>`` of ``final`` whose process no longer exists."""
    for leftover in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):
        pid = leftover.name.rsplit("-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    return True


def ensure_writable(path: str | os.PathLike) -> Path:
    """Check, before any long work, that a file can be written at ``path``.

    Creates the parent folder if needed and writes (then removes) a probe file in it; raises
    ``PruneError`` if ``path`` is a folder or the folder cannot be created or written.
    """
    final = Path(path)
    if final.is_dir():
        raise PruneError(f"{final} is a folder; give a file name")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=final.parent, prefix=f".{final.name}.probe-"):
            pass
    except OSError as err:
        raise PruneError(f"cannot write {final} ({err.strerror or err}); choose another path") from None
    return final


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` to ``path``; a failure raises ``PruneError`` naming the path."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    except OSError as err:
        raise PruneError(f"cannot write {path} ({err.strerror or err}); choose another path") from None
