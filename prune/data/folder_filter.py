"""A manifest applied to an image folder (``prune filter --dataset folder:PATH``): the chosen files, copied.

The folder is listed again (no image is decoded) and checked against the manifest: the files
the selection left out as unreadable (``skipped``) are left out again, then the file list's
fingerprint, its size and its labels must match. The chosen training files are copied into a
new tree of the same layout, and the test side (``test/`` or ``val/``), if any, whole; with
``link`` (``--link``) they are hard links where the file system allows instead (no space used,
but editing a file of the new tree edits the source's). The tree is built beside ``out`` and
renamed into place; ``MARKER`` in it records the manifest, and ``--overwrite`` replaces only a
folder that holds one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from prune.atomic import atomic_path, ensure_writable
from prune.data.folder import FolderSide, files_fingerprint, scan
from prune.data.labels import label_fingerprint
from prune.errors import PruneError

MARKER = ".prune-filter.json"


def _place(source: Path, target: Path, link: bool) -> bool:
    """Copy ``source`` to ``target`` (False), or with ``link`` hard-link it (True) where the file system allows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, target)
            return True
        except OSError:
            pass
    shutil.copy2(source, target)
    return False


def write_filtered_folder(manifest, spec: str, out, *, force: bool = False, overwrite: bool = False,
                          inputs=(), link: bool = False) -> tuple[Path, int, int, str | None]:
    """Write the manifest's files of ``folder:PATH`` to ``out`` (copies, or hard links with ``link``);
    returns (out, files, hard links, warning)."""
    tree = scan(spec)
    out = Path(out).expanduser()
    ensure_writable(out, inputs=[tree.root, *inputs], folder=True, overwrite=overwrite)
    if out.exists() and not out.is_dir():
        raise PruneError(f"{out} is a file, not a folder prune filter wrote; prune replaces only what it wrote: "
                         "choose another --out")
    if out.is_dir() and not (out / MARKER).is_file():
        raise PruneError(f"{out} is a folder that prune filter did not write; prune replaces only what it wrote: "
                         "choose another --out")
    skipped = set(manifest.dataset.get("skipped") or ())
    files = [(name, label) for name, label in tree.train.files if name not in skipped]
    labels = [label for _, label in files]
    counts = [labels.count(c) for c in range(manifest.dataset["num_classes"])]
    warning = manifest.check_dataset(fingerprint=label_fingerprint(labels), num_examples=len(files), force=force,
                                     class_counts=counts, files_fingerprint=files_fingerprint(n for n, _ in files))
    chosen = [files[i] for i in manifest.indices]
    train_part = tree.train.folder.relative_to(tree.root)  # "train", or "." for a folder of class folders
    linked = 0
    try:
        with atomic_path(out.resolve(), overwrite=overwrite) as tmp:
            for name, _ in chosen:
                linked += _place(tree.train.folder / name, tmp / train_part / name, link)
            test: FolderSide | None = tree.test
            for name, _ in (test.files if test else ()):
                linked += _place(test.folder / name, tmp / test.folder.name / name, link)
            (tmp / MARKER).write_text(json.dumps({"manifest_dataset": manifest.dataset["source"],
                                                  "files": len(chosen), "method": manifest.method}, indent=1) + "\n")
    except OSError as err:
        raise PruneError(f"cannot write {out} ({err.strerror or err}); nothing was written there") from None
    return out, len(chosen), linked, warning
