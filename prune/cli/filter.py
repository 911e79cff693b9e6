"""`prune filter`: write a manifest's rows of a Hugging Face dataset (or files of an image folder) to a new folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from prune.atomic import finishing
from prune.cli.options import Quiet, flag
from prune.data.folder_filter import write_filtered_folder
from prune.data.hf_filter import quiet_datasets, write_filtered
from prune.data.sources import SourceOptions
from prune.errors import PruneError
from prune.manifest import Manifest
from prune.training import console


def filter_command(
    manifest: Path = typer.Option(..., "--manifest", help="Manifest whose rows to keep."),
    out: Path = typer.Option(..., "--out", help="Folder to write (written beside it, then renamed): save_to_disk, or an image folder tree."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="hf:PATH, a save_to_disk folder, or folder:PATH, an image folder (default: the manifest's source)."),
    split: Optional[str] = typer.Option(None, "--split", help="DatasetDict split to filter (default: the manifest's); other splits are copied."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Column of labels checked against the manifest (default: the manifest's, else label)."),
    weight_column: bool = flag("weight-column", "Add a prune_weight column holding each row's gamma."),
    force: bool = flag("force", "Write even if the data do not match the manifest (warns)."),
    overwrite: bool = flag("overwrite", "Replace --out if it exists (only a folder prune filter or save_to_disk wrote)."),
    link: bool = flag("link", "folder: only: hard-link the images instead of copying them (no space used, but editing one edits the source)."),
    quiet: bool = Quiet,
):
    """Write a manifest's rows of a Hugging Face dataset (hf:PATH) to a new save_to_disk folder, or its files
    of an image folder (folder:PATH) to a new tree of copies (or hard links, with --link)."""
    chosen = Manifest.load(manifest)
    source = dataset or chosen.dataset["source"]
    if source.strip().lower().startswith("folder:"):
        if split or label_column or weight_column:
            raise PruneError("--split, --label-column and --weight-column apply to hf: datasets, not to folder:; drop them")
        start = time.perf_counter()
        with finishing():
            written, files, linked, warning = write_filtered_folder(chosen, source.strip(), out, force=force,
                                                                    overwrite=overwrite, inputs=[manifest], link=link)
        if warning:
            console.print(f"[yellow]warning:[/] {warning}")
        how = f"{linked} files hard-linked, the rest copied" if link else "copied"
        console.print(f"wrote {files} of {chosen.dataset['num_examples']} training images to {written} "
                      f"({how}) in {time.perf_counter() - start:.1f} s")
        return
    if link:
        raise PruneError("--link applies to folder: datasets (hf: rows are written by save_to_disk); drop it")
    if not source.strip().lower().startswith("hf:"):
        raise PruneError(f"prune filter writes Hugging Face datasets and image folders; pass --dataset hf:PATH or "
                         f"folder:PATH (the manifest was made from {chosen.dataset['source']!r})")
    start = time.perf_counter()
    with finishing(), quiet_datasets(quiet):  # --quiet: the datasets library's bars too
        written, rows, warning = write_filtered(chosen, source, out,
                                                options=SourceOptions(split=split, label_column=label_column),
                                                weight_column=weight_column, force=force, overwrite=overwrite,
                                                inputs=[manifest])
    if warning:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(f"wrote {rows} of {chosen.dataset['num_examples']} rows to {written} "
                  f"in {time.perf_counter() - start:.1f} s")
