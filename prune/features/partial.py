"""A feature store being written: resumable work in progress beside the store's path.

``prune features --out DIR/NAME.h5`` works in the folder ``DIR/.NAME.h5.partial/``:

* one ``.npy`` file per store dataset (``grad_logit``, ``hess_logit``, ``embedding``,
  ``grad_logit_ema``, ``hess_logit_ema``, ``loss_per_epoch``, and with M > 1 the ``*_point`` ones), memory-mapped and filled block
  by block. Raw arrays, not HDF5: a writer killed mid-block can leave at most that block's
  rows half-written, never a damaged file structure (HDF5 keeps its metadata in a cache that
  a killed process never writes back);
* ``warm.pt``: the warm model's weights, once warm-up is done;
* ``progress.json``, replaced atomically after the arrays it vouches for are flushed: the
  settings the work began with, ``warmup_done``, ``samples_done`` (feature passes whose rows
  are all written: the M posterior samples, then with M > 1 the unperturbed weights),
  ``rows_done`` (rows written of the next pass) and that pass's random-generator state at that row.

``finish`` copies the arrays into the HDF5 store (``prune.features.store.create_store``: temporary
name, then rename) and removes the folder. A run with ``resume=True`` continues from the last
committed block -- warm-up is re-run (it is deterministic given the seed) only if it had not
finished -- after checking that its settings equal the recorded ones; without ``resume`` a
leftover folder is replaced. An exclusive lock on the folder keeps two runs from writing the
same store at once.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from prune.atomic import atomic_path, ensure_writable, write_text
from prune.errors import PruneError
from prune.features.store import CHUNK_ROWS, PER_SAMPLE, create_store

try:  # POSIX advisory locks; elsewhere two runs on one --out are not guarded
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

PROGRESS_SCHEMA = "prune.partial/1"
ARRAYS = (*PER_SAMPLE, "grad_logit_ema", "hess_logit_ema", "loss_per_epoch")


def partial_path(path: str | os.PathLike) -> Path:
    """The work folder of the store at ``path``: ``.NAME.partial`` beside it."""
    final = Path(path)
    return final.with_name(f".{final.name}.partial")


def _layout(n: int, samples: int, num_classes: int, embedding_dim: int, checkpoints: int, dtype: str) -> dict:
    width = {"grad_logit": num_classes, "hess_logit": num_classes, "embedding": embedding_dim}
    layout = {name: ((n, samples, width[name]), dtype) for name in PER_SAMPLE}
    if samples > 1:  # and the unperturbed weights' features
        layout.update({f"{name}_point": ((n, width[name]), dtype) for name in PER_SAMPLE})
    layout["grad_logit_ema"] = layout["hess_logit_ema"] = ((n, num_classes), dtype)
    layout["loss_per_epoch"] = ((n, checkpoints), "float32")
    return layout


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            out.update(_flat(inner, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _differences(recorded: dict, now: dict) -> list[str]:
    a, b = _flat(recorded), _flat(now)
    return [f"{key}: {a.get(key, '-')!r} then, {b.get(key, '-')!r} now" for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)]


class _Lock:
    """An exclusive, non-blocking lock on a folder (released when the holder exits or dies)."""

    def __init__(self, folder: Path, store: Path):
        self.fd = None
        if fcntl is None:
            return
        self.fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise PruneError(f"another prune process is writing {store} (its work folder {folder} is locked); "
                             "wait for it to finish, or choose another --out") from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


class PartialStore:
    """The work folder of one store; see the module docstring. Create it with ``PartialStore.open``."""

    def __init__(self, path: Path, folder: Path, lock: _Lock, progress: dict, arrays: dict[str, np.ndarray],
                 notes: list[str]):
        self.path, self.folder, self.lock = path, folder, lock
        self.progress, self.arrays, self.notes = progress, arrays, notes

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    @contextmanager
    def open(cls, path: str | os.PathLike, *, settings: dict, resume: bool, n: int, samples: int, num_classes: int,
             embedding_dim: int, checkpoints: int, dtype: str) -> Iterator["PartialStore"]:
        """Continue (``resume``) or begin the work of the store at ``path``.

        On ``PruneError`` (bad settings, diverged features) the folder is removed; on any other
        exception (Ctrl-C, a crash) it is kept for ``resume``.
        """
        path = Path(path)
        ensure_writable(path)
        folder = partial_path(path)
        settings = json.loads(json.dumps(settings))  # as progress.json will hold it
        layout = _layout(n, samples, num_classes, embedding_dim, checkpoints, dtype)
        settings["layout"] = {name: list(shape) for name, (shape, _) in layout.items()}
        part = None
        notes: list[str] = []
        if folder.exists():
            lock = _Lock(folder, path)
            if resume:
                part = cls._reopen(path, folder, lock, settings, layout, notes)
            else:
                notes.append(f"replacing the unfinished work of an interrupted run in {folder} "
                             "(pass --resume to continue it instead)")
            if part is None:
                lock.release()
                shutil.rmtree(folder)
        elif resume:
            notes.append(f"nothing to resume for {path} (no {folder.name}); starting from the beginning")
        if part is None:
            part = cls._create(path, folder, settings, layout, notes)
        try:
            yield part
        except PruneError:
            part.discard()
            raise
        except BaseException:
            part.close()
            raise
        part.close()

    @classmethod
    def _create(cls, path: Path, folder: Path, settings: dict, layout: dict, notes: list[str]) -> "PartialStore":
        try:
            folder.mkdir()
        except OSError as err:
            raise PruneError(f"cannot create {folder} ({err.strerror}); choose another --out") from None
        lock = _Lock(folder, path)
        arrays = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
                  for name, (shape, dtype) in layout.items()}
        progress = {"schema": PROGRESS_SCHEMA, "settings": settings, "warmup_done": False, "samples_done": 0,
                    "rows_done": 0, "generator": None}
        part = cls(path, folder, lock, progress, arrays, notes)
        part.commit()
        return part

    @classmethod
    def _reopen(cls, path: Path, folder: Path, lock: _Lock, settings: dict, layout: dict,
                notes: list[str]) -> "PartialStore | None":
        try:
            progress = json.loads((folder / "progress.json").read_text())
            if progress.get("schema") != PROGRESS_SCHEMA:
                raise ValueError(f"schema {progress.get('schema')!r}")
            recorded = progress["settings"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            notes.append(f"the unfinished work in {folder} cannot be resumed ({err}); starting from the beginning")
            return None
        differences = _differences(recorded, settings)
        if differences:
            lock.release()
            shown = "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")
            raise PruneError(f"--resume: the unfinished work in {folder} was started with other settings ({shown}); "
                             "rerun with the original settings, or leave out --resume to start over")
        try:
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r+") for name in layout}
            for name, (shape, dtype) in layout.items():
                if arrays[name].shape != shape or arrays[name].dtype != np.dtype(dtype):
                    raise ValueError(f"{name}.npy has shape {arrays[name].shape}, expected {shape}")
        except (OSError, ValueError) as err:
            notes.append(f"the unfinished work in {folder} cannot be resumed ({err}); starting from the beginning")
            return None
        part = cls(path, folder, lock, progress, arrays, notes)
        if progress["samples_done"] or progress["rows_done"]:
            samples = len(arrays["grad_logit"][0])
            done = f"{min(progress['samples_done'], samples)} of {samples} posterior samples"
            if progress["rows_done"]:
                done += f" and {progress['rows_done']} rows of the next pass"
            notes.append(f"resuming {path}: warm-up done, {done} written")
        elif progress["warmup_done"]:
            notes.append(f"resuming {path}: warm-up done")
        else:
            notes.append(f"resuming {path}: warm-up had not finished, so it runs again (it is deterministic)")
        return part

    # -- progress --------------------------------------------------------------------------
    @property
    def warmup_done(self) -> bool:
        return bool(self.progress["warmup_done"])

    @property
    def samples_done(self) -> int:
        return int(self.progress["samples_done"])

    @property
    def rows_done(self) -> int:
        return int(self.progress["rows_done"])

    def generator_state(self) -> torch.Tensor | None:
        state = self.progress.get("generator")
        return None if state is None else torch.frombuffer(bytearray(base64.b64decode(state)), dtype=torch.uint8)

    def commit(self, *, generator: torch.Generator | None = None, **changes) -> None:
        """Record ``changes`` (and the generator's state) in progress.json, after the rows they vouch for.

        No msync: the arrays are shared mappings, so rows written before a kill reach the file
        anyway (the page cache outlives the process); only a power cut could lose them.
        """
        self.progress.update(changes)
        self.progress["generator"] = None if generator is None else base64.b64encode(
            generator.get_state().numpy().tobytes()).decode("ascii")
        write_text(self.folder / "progress.json", json.dumps(self.progress) + "\n")

    # -- writing ---------------------------------------------------------------------------
    def _array(self, name: str, values: torch.Tensor) -> np.ndarray:
        target = self.arrays[name]
        array = values.detach().cpu().numpy().astype(target.dtype, copy=False)
        if not np.isfinite(array).all():
            if target.dtype == np.float16 and np.isfinite(values.detach().cpu().numpy()).all():
                raise PruneError(f"{name} values exceed the float16 range; use --dtype float32")
            raise PruneError(f"{name} became NaN or inf (the warm-up diverged, or the posterior perturbation is too "
                             "large); lower --lr or --posterior-sigma and retry")
        return array

    def write_rows(self, name: str, start: int, values: torch.Tensor, sample: int | None = None) -> None:
        array = self._array(name, values)
        if sample is None:
            self.arrays[name][start:start + len(array)] = array
        else:
            self.arrays[name][start:start + len(array), sample] = array

    def write_column(self, name: str, column: int, values: torch.Tensor) -> None:
        self.arrays[name][:, column] = self._array(name, values)

    def save_model(self, model: torch.nn.Module) -> None:
        with atomic_path(self.folder / "warm.pt") as tmp:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)

    def load_model(self, model: torch.nn.Module) -> torch.nn.Module:
        try:
            state = torch.load(self.folder / "warm.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (OSError, RuntimeError, KeyError) as err:
            raise PruneError(f"the warm model in {self.folder} cannot be read ({err}); "
                             "leave out --resume to start over") from None
        return model

    # -- ending ----------------------------------------------------------------------------
    def finish(self, *, labels: np.ndarray, flipped: np.ndarray, attrs: dict) -> Path:
        """Copy everything into the HDF5 store at ``self.path`` (atomically), then remove the folder."""
        for array in self.arrays.values():
            array.flush()
        grad = self.arrays["grad_logit"]
        shape = dict(samples=grad.shape[1], num_classes=grad.shape[2],
                     embedding_dim=self.arrays["embedding"].shape[2],
                     checkpoints=self.arrays["loss_per_epoch"].shape[1], dtype=str(grad.dtype))
        with create_store(self.path, labels=labels, flipped=flipped, attrs=attrs, **shape) as store:
            for name, array in self.arrays.items():
                for start in range(0, len(array), CHUNK_ROWS):
                    store.file[name][start:start + CHUNK_ROWS] = array[start:start + CHUNK_ROWS]
        self.discard()
        return self.path

    def close(self) -> None:
        """Keep the folder (for ``resume``); release the arrays and the lock."""
        self.arrays = {}
        self.lock.release()

    def discard(self) -> None:
        """Remove the folder: the work is finished, or not worth resuming."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
