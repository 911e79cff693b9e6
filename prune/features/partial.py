"""A feature store being written: resumable work in progress beside the store's path.

``prune features --out DIR/NAME.h5`` works in the folder ``DIR/.NAME.h5.partial/``:

* one ``.npy`` file per store dataset (``grad_logit``, ``hess_logit``, ``embedding``,
  ``grad_logit_ema``, ``hess_logit_ema``, the warm-up's ``loss_per_epoch``, ``prob_label_per_epoch``,
  ``margin_per_epoch`` and ``correct_per_epoch``, and with M > 1 the ``*_point`` ones), memory-mapped and filled block
  by block. Raw arrays, not HDF5: a writer killed mid-block can leave at most that block's
  rows half-written, never a damaged file structure (HDF5 keeps its metadata in a cache that
  a killed process never writes back). Their disk space is allocated when they are created,
  so a full disk is an error then, not a crash (SIGBUS) in mid-write;
* ``warm.pt``: the warm model's weights, once warm-up is done;
* ``progress.json``, replaced atomically after the arrays it vouches for are flushed: the
  settings the work began with, ``warmup_done``, ``samples_done`` (feature passes whose rows
  are all written: the M posterior samples, then with M > 1 the unperturbed weights),
  ``rows_done`` (rows written of the next pass), that pass's random-generator state at that row,
  and a CRC-32 of the warm-up's results (``warmup_crc``) and of every committed block of rows
  (``blocks``: pass, first row, end row, CRC). Under torchrun the ranks' shards of a pass are
  written step by step, out of row order: ``steps`` records how many batches of every rank's shard
  are in, and for which layout (ranks, batch size), so that a resume with that layout continues
  each rank's shard where it stopped (``steps_done``).

``finish`` copies the arrays into the HDF5 store (``prune.features.store.create_store``: temporary
name, then rename) and removes the folder. A run with ``resume=True`` continues from the last
committed block -- warm-up is re-run (it is deterministic given the seed) only if it had not
finished -- after checking that its settings equal the recorded ones and that the committed
work still has its checksums: from a damaged block on, the work is redone (from the start of
that posterior sample, whose random stream is known there; a damaged warm-up from the
beginning), and a note says so; with nothing to resume it is refused. Without ``resume`` a
leftover folder is replaced. An exclusive lock on the folder keeps two runs from writing the
same store at once. Free space for the work folder and the store is checked before starting; a
write that fails (a full disk) keeps the work for ``resume``.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from prune.atomic import atomic_path, committing, ensure_writable
from prune.errors import PruneError
from prune.features.store import CHUNK_ROWS, PER_EPOCH, PER_SAMPLE, create_store

try:  # POSIX advisory locks; elsewhere two runs on one --out are not guarded
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

PROGRESS_SCHEMA = "prune.partial/3"  # 3: the per-epoch p_y, margin and correctness beside the loss


def partial_path(path: str | os.PathLike) -> Path:
    """The work folder of the store at ``path``: ``.NAME.partial`` beside it."""
    final = Path(path)
    return final.with_name(f".{final.name}.partial")


@dataclass(frozen=True)
class StoreShape:
    """The sizes of a store: n examples, M posterior samples, C classes, embedding width, T checkpoints, and its dtype."""

    n: int
    samples: int
    num_classes: int
    embedding_dim: int
    checkpoints: int
    dtype: str

    def layout(self) -> dict:
        """Each work array's (shape, dtype)."""
        n, dtype = self.n, self.dtype
        width = {"grad_logit": self.num_classes, "hess_logit": self.num_classes, "embedding": self.embedding_dim}
        layout = {name: ((n, self.samples, width[name]), dtype) for name in PER_SAMPLE}
        if self.samples > 1:  # and the unperturbed weights' features
            layout.update({f"{name}_point": ((n, width[name]), dtype) for name in PER_SAMPLE})
        layout["grad_logit_ema"] = layout["hess_logit_ema"] = ((n, self.num_classes), dtype)
        layout.update({name: ((n, self.checkpoints), kind) for name, kind in PER_EPOCH.items()})
        return layout


def _crc(arrays, crc: int = 0) -> int:
    for array in arrays:
        crc = zlib.crc32(np.ascontiguousarray(array).data, crc)
    return crc


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


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


def _allocated(path: Path, shape: tuple, dtype: str) -> np.ndarray:
    """A new .npy file memory-mapped for writing, its disk space allocated now (not on first write)."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as file:
            os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
    return array


def _check_space(path: Path, needed: int, per_epoch: float = 0.0, epochs: int = 1) -> None:
    """Refuse to start when the folder of ``path`` has less than ``needed`` bytes free.

    ``per_epoch`` is the share of ``needed`` taken by the per-epoch records of ``epochs`` warm-up
    epochs: where they are most of it, the message points at ``--warmup-epochs`` (a typo there
    looks like a full disk otherwise)."""
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        epochs_hint = (f" ({per_epoch:.0%} of it the per-epoch records of {epochs:,} warm-up epochs: "
                       "is --warmup-epochs what you meant?)" if per_epoch > 0.5 else "")
        raise PruneError(f"not enough free space for {path}: the work folder and the store need about "
                         f"{_megabytes(needed)}{epochs_hint}, {path.parent} has {_megabytes(free)} free; "
                         "free some space or choose another --out")


class PartialStore:
    """The work folder of one store; see the module docstring. Create it with ``PartialStore.open``."""

    def __init__(self, path: Path, folder: Path, lock: _Lock, progress: dict, arrays: dict[str, np.ndarray],
                 notes: list[str]):
        self.path, self.folder, self.lock = path, folder, lock
        self.progress, self.arrays, self.notes = progress, arrays, notes

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    @contextmanager
    def open(cls, path: str | os.PathLike, *, settings: dict, resume: bool, **shape) -> Iterator["PartialStore"]:
        """Continue (``resume``) or begin the work of the store at ``path``, of ``shape`` (``StoreShape``'s fields).

        On ``PruneError`` (bad settings, diverged features) the folder is removed; on any other
        exception (Ctrl-C, a crash) it is kept for ``resume``, and a failed write (``OSError``:
        a full disk) becomes a ``PruneError`` saying so.
        """
        path = Path(path)
        ensure_writable(path)
        folder = partial_path(path)
        settings = json.loads(json.dumps(settings))  # as progress.json will hold it
        layout = StoreShape(**shape).layout()
        settings["layout"] = {name: list(dims) for name, (dims, _) in layout.items()}
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
            raise PruneError(f"--resume: there is no unfinished work for {path} (no {folder.name}) to resume; "
                             "leave out --resume to start")
        sizes = {name: int(np.prod(dims)) * np.dtype(dtype).itemsize for name, (dims, dtype) in layout.items()}
        store_bytes = sum(sizes.values())
        per_epoch = sum(size for name, size in sizes.items() if name.endswith("_per_epoch")) / max(store_bytes, 1)
        try:  # the store, and the work folder unless it is there already
            _check_space(path, store_bytes * (1 if part is not None else 2), per_epoch, shape["checkpoints"])
        except PruneError:
            if part is not None:
                part.close()
            raise
        if part is None:
            part = cls._create(path, folder, settings, layout, notes)
        try:
            yield part
        except PruneError:
            part.discard()
            raise
        except OSError as err:
            part.close()
            raise PruneError(f"cannot write {err.filename or path} ({err.strerror or err}); the work done is kept in "
                             f"{folder}: free some space (or fix the cause) and run the same command with --resume"
                             ) from None
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
        progress = {"schema": PROGRESS_SCHEMA, "settings": settings, "warmup_done": False, "samples_done": 0,
                    "rows_done": 0, "generator": None, "warmup_crc": None, "blocks": []}
        try:
            arrays = {name: _allocated(folder / f"{name}.npy", shape, dtype) for name, (shape, dtype) in layout.items()}
            part = cls(path, folder, lock, progress, arrays, notes)
            part.commit()
        except OSError as err:
            lock.release()
            shutil.rmtree(folder, ignore_errors=True)
            raise PruneError(f"cannot write {folder} ({err.strerror or err}); free some space or choose another "
                             "--out") from None
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
        damage = part._verify()
        if damage:
            notes.append(damage)
        notes.append(part._resumed())
        return part

    def _resumed(self) -> str:
        """What a resume continues from, for the user. Work whose every pass is in (a run killed while it
        copied them into the store) becomes "the last pass, all rows written", so no pass runs again."""
        progress, path = self.progress, self.path
        samples = self.arrays["grad_logit"].shape[1]
        passes = samples + (samples > 1)  # the M samples, then with M > 1 the unperturbed weights
        if progress["warmup_done"] and progress["samples_done"] >= passes:
            progress.update(samples_done=passes - 1, rows_done=len(self.arrays["grad_logit"]), steps=None,
                            generator=None)
            return f"resuming {path}: every feature pass was done; copying them into the store"
        if progress["samples_done"] or progress["rows_done"] or progress.get("steps"):
            done = f"{min(progress['samples_done'], samples)} of {samples} posterior samples"
            if progress["rows_done"]:
                done += f" and {progress['rows_done']} rows of the next pass"
            if progress.get("steps"):
                ranks, batch_size, steps = progress["steps"]
                done += f" and {steps} batches of {batch_size} rows of each of {ranks} ranks' shards of the next pass"
            return f"resuming {path}: warm-up done, {done} written"
        if progress["warmup_done"]:
            return f"resuming {path}: warm-up done"
        return f"resuming {path}: warm-up had not finished, so it runs again (it is deterministic)"

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

    def steps_done(self, ranks: int, batch_size: int) -> int:
        """Batches of each rank's shard of the next pass that are in, for this layout (0 for another)."""
        steps = self.progress.get("steps")
        return int(steps[2]) if steps and steps[:2] == [ranks, batch_size] else 0

    def commit_steps(self, ranks: int, batch_size: int, steps: int, blocks: list[tuple[int, int]]) -> None:
        """Record the rows ``blocks`` (start, stop) of the current pass, the ranks' batches of step
        ``steps`` - 1, as written, with their checksums."""
        sample = self.samples_done
        self.progress["blocks"] += [[sample, start, stop, self._rows_crc(sample, start, stop)] for start, stop in blocks]
        self.commit(steps=[ranks, batch_size, steps])

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
        with atomic_path(self.folder / "progress.json") as tmp:
            tmp.write_text(json.dumps(self.progress) + "\n")

    def commit_warmup(self) -> None:
        """Record the warm-up (arrays and ``warm.pt``) as done, with its checksum."""
        self.commit(warmup_done=True, warmup_crc=self._warmup_crc())

    def commit_rows(self, stop: int, generator: torch.Generator | None = None) -> None:
        """Record rows ``rows_done``..``stop`` of the current pass as written, with their checksum."""
        sample, start = self.samples_done, self.rows_done
        self.progress["blocks"].append([sample, start, stop, self._rows_crc(sample, start, stop)])
        self.commit(rows_done=stop, generator=generator)

    def _warmup_crc(self) -> int:
        crc = _crc(self.arrays[name] for name in ("grad_logit_ema", "hess_logit_ema", *PER_EPOCH))
        return zlib.crc32((self.folder / "warm.pt").read_bytes(), crc)

    def _rows_crc(self, sample: int, start: int, stop: int) -> int:
        if sample == self.arrays["grad_logit"].shape[1]:  # the pass at the unperturbed weights
            return _crc(self.arrays[f"{name}_point"][start:stop] for name in PER_SAMPLE)
        return _crc(self.arrays[name][start:stop, sample] for name in PER_SAMPLE)

    def _verify(self) -> str | None:
        """Check the committed work against its checksums; from the first damage on, mark it undone.

        Returns a note for the user, or None when everything checks out.
        """
        progress = self.progress
        if not progress["warmup_done"]:
            return None
        try:
            warm_ok = self._warmup_crc() == progress["warmup_crc"]
        except OSError:  # warm.pt is gone
            warm_ok = False
        if not warm_ok:
            progress.update(warmup_done=False, warmup_crc=None, samples_done=0, rows_done=0, steps=None, blocks=[])
            return f"the warm-up's results in {self.folder} are damaged (checksum differs); redoing the work from the start"
        for sample, start, stop, crc in progress["blocks"]:
            if self._rows_crc(sample, start, stop) != crc:
                progress.update(samples_done=sample, rows_done=0, steps=None,
                                blocks=[block for block in progress["blocks"] if block[0] < sample])
                return (f"rows {start}..{stop - 1} of posterior sample {sample + 1} in {self.folder} are damaged "
                        f"(checksum differs); recomputing from the start of that sample")
        return None

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

    def write_features(self, start: int, batch: dict, sample: int | None) -> None:
        """A feature pass's batch from row ``start``: its g, a and h as posterior sample ``sample``, or
        with None as the unperturbed weights' (``*_point``)."""
        for name in PER_SAMPLE:
            if sample is None:
                self.write_rows(f"{name}_point", start, batch[name])
            else:
                self.write_rows(name, start, batch[name], sample=sample)

    def write_column(self, name: str, column: int, values: torch.Tensor) -> None:
        self.arrays[name][:, column] = self._array(name, values)

    def save_model(self, model: torch.nn.Module) -> None:
        """The warm model's weights to ``warm.pt``; torch's writer failing (a full disk) is an ``OSError``,
        so the work is kept for ``resume``."""
        try:
            with atomic_path(self.folder / "warm.pt") as tmp:
                torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
        except RuntimeError as err:
            raise OSError(errno.EIO, f"torch's writer failed: {(str(err).strip().splitlines() or ['?'])[-1]}",
                          str(self.folder / "warm.pt")) from None

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
        with committing():  # Ctrl-C takes effect once the store is complete and the folder removed
            try:
                with create_store(self.path, labels=labels, flipped=flipped, attrs=attrs, **shape) as store:
                    for name, array in self.arrays.items():
                        for start in range(0, len(array), CHUNK_ROWS):
                            store.file[name][start:start + CHUNK_ROWS] = array[start:start + CHUNK_ROWS]
            except RuntimeError as err:  # HDF5's writer failing (a full disk): kept for resume, as an OSError is
                raise OSError(errno.EIO, f"the HDF5 writer failed: {err}", str(self.path)) from None
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
