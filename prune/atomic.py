"""Write-then-rename, so an interrupted run never leaves a file that looks complete.

Every output goes through here: ``ensure_writable`` checks a path before any work (a folder's
rights, no device, pipe, socket or link, not one of the command's inputs, and -- every command's one
policy -- no existing output unless ``--overwrite``), ``atomic_path`` writes
under a temporary name and renames it onto the path with Ctrl-C held off (``committing``),
so a commit is never cut in half; without ``overwrite`` it claims the path (a hard link that
fails if something appeared there meanwhile), so two runs on one path never replace each other.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import signal
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from prune.errors import PruneError

_SPECIAL = ((stat.S_ISFIFO, "pipe (FIFO)"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
            (stat.S_ISSOCK, "socket"))


def special_kind(path: str | os.PathLike) -> str | None:
    """What ``path`` (links followed) is when it is a device, pipe or socket (``"pipe (FIFO)"``); else None."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # absent, a dangling link, a name too long
        return None
    return next((kind for test, kind in _SPECIAL if test(mode)), None)


def input_kind(path: str | os.PathLike, what: str) -> str | None:
    """What is at the input ``path`` (links followed): ``"file"``, ``"folder"``, a device, pipe or socket
    (``special_kind``'s words), or None when nothing is. A path the system cannot look up (a name too long,
    a loop of links, no permission) raises ``PruneError`` naming ``what`` ("manifest") and the path."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise PruneError(f"cannot read {what} {path} ({err.strerror or err}); check the path") from None
    if stat.S_ISDIR(mode):
        return "folder"
    return "file" if stat.S_ISREG(mode) else special_kind(path) or "special file"


def refuse_special(path: str | os.PathLike) -> None:
    """Raise ``PruneError`` if ``path`` (links followed) exists and is neither a regular file nor a folder.

    An output is renamed onto its path, which would replace a device or a pipe by a regular file.
    """
    kind = special_kind(path)
    if kind is not None:
        raise PruneError(f"{path} is a {kind}, not a regular file; prune writes its outputs by renaming a "
                         "finished file onto the path, which would replace it: give a file path")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)  # symbolic or hard links
    except OSError:  # one of them does not exist
        return False


def refuse_inputs(path: str | os.PathLike, inputs: Iterable, *, folder: bool = False) -> None:
    """Raise ``PruneError`` if writing ``path`` could destroy one of ``inputs`` (paths; None is skipped).

    Refused: the same file (by resolved path or inode, links included), a path inside an input
    folder, and, when ``folder`` (an output folder replaced as a whole), an input inside it.
    """
    out = Path(path).expanduser()
    for given in inputs:
        if given is None:
            continue
        given = Path(given).expanduser()
        if _same(out, given):
            problem = f"is {given}, which this command also reads or writes"
        elif given.is_dir() and given.resolve() in out.resolve().parents:
            problem = f"overlaps the input folder {given} (it lies inside it)"
        elif folder and out.resolve() in given.resolve().parents:
            problem = f"overlaps the input {given} (replacing the folder would delete it)"
        else:
            continue
        raise PruneError(f"{out} {problem}; writing there would destroy an input: choose another path")


def output_exists(path: str | os.PathLike) -> bool:
    """Whether an output is at ``path``: a file, a link (even a dangling one) or a folder that is not empty."""
    final = Path(path).expanduser()
    if final.is_symlink() or not final.is_dir():
        return final.is_symlink() or final.exists()
    return any(final.iterdir())


def refuse_existing(path: str | os.PathLike) -> None:
    """Raise ``PruneError`` if an output is at ``path`` (``output_exists``): every command's policy without --overwrite."""
    if output_exists(path):
        raise PruneError(f"{path} already exists; pass --overwrite to replace it, or choose another path")


def refuse_link(path: str | os.PathLike) -> None:
    """Raise ``PruneError`` if ``path`` is a symbolic link, or a file with other hard links.

    The rename that writes an output would replace the link itself (the file it points to, or
    shares its content with, would keep the old content): the user meant one or the other.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise PruneError(f"{path} is a symbolic link; prune does not write through links (the new file would "
                         "replace the link): give the path of the file itself, or another path")
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        raise PruneError(f"{path} has {info.st_nlink - 1} other hard link(s); replacing it would leave them with the "
                         "old content: give another path")


def ensure_writable(path: str | os.PathLike, *, inputs: Iterable = (), folder: bool = False,
                    overwrite: bool = True) -> Path:
    """Check, before any long work, that prune may write ``path``.

    Refuses (``PruneError``) a device, pipe, socket or link (``refuse_link``), a path that is
    or overlaps one of ``inputs`` (``refuse_inputs``: resolved paths and inodes are compared),
    an existing folder unless ``folder`` (an output that is a folder), an existing output unless
    ``overwrite`` (``refuse_existing``), and a folder that cannot be created or written (a probe
    file is written in it), or a name too long for the file system.
    """
    final = Path(path).expanduser()
    try:
        refuse_special(final)
        if final.is_dir() and not folder:
            raise PruneError(f"{final} is a folder; give a file name")
        refuse_inputs(final, inputs, folder=folder)
        refuse_link(final)
        if not overwrite:
            refuse_existing(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=final.parent, prefix=f".{final.name}.probe-"):
            pass
    except OSError as err:
        raise PruneError(f"cannot write {final} ({err.strerror or err}); choose another path") from None
    return final


_state = threading.local()  # received: the Ctrl-Cs held by the running commit; finishing: in finishing()


@contextmanager
def committing() -> Iterator[None]:
    """Hold off Ctrl-C (SIGINT) while the block commits outputs, so a commit is never cut in half.

    A Ctrl-C that came meanwhile is raised as ``KeyboardInterrupt`` right after the block, or
    dropped inside ``finishing()``. Nested blocks hold with the outermost one; outside the main
    thread signals cannot be held and the block just runs.
    """
    if getattr(_state, "received", None) is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.received = received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _state.received = None
    if received and not getattr(_state, "finishing", False):
        raise KeyboardInterrupt


@contextmanager
def finishing() -> Iterator[None]:
    """A command's last step: a Ctrl-C held by a commit in it is dropped, so the command ends normally.

    Its outputs are then complete, and exit 0 says so; a Ctrl-C at any other moment of the
    block interrupts as usual (the output is rolled back, exit 130). Only for the command line:
    a library call must never swallow Ctrl-C.
    """
    _state.finishing = True
    try:
        yield
    finally:
        _state.finishing = False


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


@contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name starts with a dot and ends in ``.tmp-<pid>``, so a killed run leaves
    only an obviously partial file (or folder) behind, never one at ``path``; the next write of
    ``path`` removes it (``remove_leftovers``). A device, pipe
    or socket at ``path`` is never replaced (``refuse_special``). A folder written at the
    temporary name replaces what is at ``path`` by moving that aside (``.NAME.old-<pid>``),
    renaming, then removing it, all under ``committing``. Without ``overwrite`` nothing at
    ``path`` is replaced, even what appeared there while the block ran (``PruneError``).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with committing():
            refuse_special(final)
            if overwrite:
                _replace(tmp, final)
            else:
                _claim(tmp, final)
    finally:
        with committing():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()


def _replace(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` onto ``final``; a folder replaces what is there by moving it aside first."""
    old = None
    if tmp.is_dir() and (final.exists() or final.is_symlink()):  # rename() cannot replace it
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


def _claim(tmp: Path, final: Path) -> None:
    """Put ``tmp`` at ``final`` only if nothing is there: a hard link (which fails if the name is
    taken, so two runs cannot both win) for a file; a rename for a folder, after a check."""
    appeared = PruneError(f"{final} already exists (another run may have written it meanwhile); it was not "
                          "replaced: pass --overwrite to replace it, or choose another path")
    if tmp.is_dir():
        if output_exists(final):
            raise appeared
        os.rename(tmp, final)  # fails if a file or a folder that is not empty appeared since
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise appeared from None
    except OSError as err:  # a file system without hard links: an exclusive create claims the name
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        try:
            os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise appeared from None
        os.replace(tmp, final)


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> None:
    """Atomically write ``text`` to ``path``; a failure raises ``PruneError`` naming the path."""
    write_with(path, lambda tmp: tmp.write_text(text), overwrite=overwrite)


def write_with(path: str | os.PathLike, write, *, overwrite: bool = True) -> None:
    """Atomically write ``path`` with ``write(temporary path)``; a failed write (a full disk, a name too long:
    ``OSError``, or torch's writer's ``RuntimeError``) raises ``PruneError`` naming the path, and nothing is left."""
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            write(tmp)
    except (OSError, RuntimeError) as err:
        reason = (err.strerror if isinstance(err, OSError) else None) or (str(err).strip().splitlines() or [""])[-1]
        raise PruneError(f"cannot write {path} ({reason or type(err).__name__}); nothing was written there: free some space "
                         "or choose another path") from None


def save_torch(state, path: str | os.PathLike, *, overwrite: bool = True) -> None:
    """``torch.save(state)`` to ``path`` atomically, a failure told in one line (``write_with``)."""
    import torch

    write_with(path, lambda tmp: torch.save(state, tmp), overwrite=overwrite)
