"""`prune inspect`: summarise a manifest or a subset log, and check it against data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.markup import escape
from rich.table import Table

from prune.api import recorded_options, source_options
from prune.atomic import ensure_writable, finishing
from prune.cli.options import DataRoot, LabelColumn, flag
from prune.data import load_dataset
from prune.data.hf_filter import check_saved
from prune.dynamic import subset_log
from prune.errors import PruneError
from prune.manifest import Manifest
from prune.training import console


class PlainTable(Table):
    """A table whose cells are shown as is: they quote the user's files (``[/x]`` is no markup)."""

    def add_row(self, *cells, **kwargs):
        super().add_row(*(escape(c) if isinstance(c, str) else c for c in cells), **kwargs)


def inspect_command(
    manifest: Path = typer.Argument(..., help="Manifest to summarise."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Check the manifest against this data source."),
    data_root: Optional[str] = DataRoot,
    split: Optional[str] = typer.Option(None, "--split", help="hf: DatasetDict split to check against the manifest (default: train)."),
    label_column: Optional[str] = LabelColumn,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Subset logs: write the selection-count histogram (PNG) here; nothing is written without it."),
    overwrite: bool = flag("overwrite", "Replace the --plot file if it exists."),
):
    """Summarise a manifest: method, budget, per-class counts; check it against data."""
    if subset_log.is_subset_log(manifest):  # the log of a dynamic run (prune train --dynamic --log)
        inspect_log(manifest, plot, overwrite=overwrite)
        return
    if plot is not None:
        raise PruneError(f"--plot applies to subset logs (prune train --dynamic --log); {manifest} is a manifest: drop it")
    chosen = Manifest.load(manifest)
    info = PlainTable(title=escape(str(manifest)), show_header=False)
    info.add_row("dataset", f"{chosen.dataset['source']} ({chosen.dataset['num_examples']} examples, "
                 f"{chosen.dataset['num_classes']} classes)")
    if chosen.dataset.get("columns"):
        columns = ", ".join(f"{role} {name!r}" for role, name in chosen.dataset["columns"].items())
        info.add_row("split, columns", f"{chosen.dataset['split']}; {columns}")
    info.add_row("fingerprint", chosen.dataset["fingerprint"])
    params = chosen.method.get("params") or {}
    info.add_row("method", f"{chosen.method['name']} {json.dumps(params)}")
    if "posterior" in params:  # distance methods
        info.add_row("distance", "at the unperturbed warm weights (posterior point)" if params["posterior"] == "point"
                     else f"mean over {params.get('posterior_samples', 'the')} posterior samples (posterior mean)")
    budget = chosen.budget
    info.add_row("budget", f"{len(chosen)} examples ({len(chosen) / chosen.dataset['num_examples']:.2%}), {budget.get('balance')}")
    info.add_row("weights", f"min {chosen.weights.min():g}, mean {chosen.weights.mean():g}, max {chosen.weights.max():g}" if len(chosen) else "-")
    for key, why in (("dropped_hard", "difficulty stage"), ("dropped_learned", "learned (crest)")):
        per_class = chosen.selection.get(key)
        if per_class is not None:
            info.add_row(f"dropped: {why}", f"{sum(per_class)} examples ({', '.join(map(str, per_class))} per class)")
    info.add_row("seed", str(chosen.seed))
    if chosen.label_noise:
        info.add_row("label noise", f"{chosen.label_noise['fraction']} ({len(chosen.label_noise['flipped'])} flipped)")
    info.add_row("created", f"{chosen.created_at} by prune {chosen.prune_version}")
    console.print(info)
    classes = Table(title="per class")
    classes.add_column("class", justify="right")
    classes.add_column("selected", justify="right")
    for c, k in enumerate(chosen.per_class):
        classes.add_row(str(c), str(k))
    console.print(classes)
    if dataset and dataset.strip()[:3].lower() == "hf:":  # labels only: no images are read
        console.print(f"[green]matches[/] {check_saved(chosen, dataset, split=split, label_column=label_column)}")
    elif dataset:
        options = recorded_options(chosen.dataset) if dataset.strip()[:7].lower() == "folder:" else {}
        data = load_dataset(dataset, data_root, **source_options(split=split, label_column=label_column), **options)
        counts = torch.bincount(data.train.y, minlength=data.num_classes).tolist()
        chosen.check_dataset(fingerprint=data.fingerprint, num_examples=len(data.train), class_counts=counts,
                             files_fingerprint=data.record().get("files_fingerprint"), can_force=False)
        console.print(f"[green]matches[/] {data.source}")


def inspect_log(path, plot=None, *, overwrite: bool = False) -> dict:
    """``prune inspect LOG``: summary table, and with ``plot`` a PNG histogram of selection counts
    (an existing file is replaced only with ``overwrite``; the log never)."""
    if plot is not None:
        ensure_writable(plot, inputs=[path], overwrite=overwrite)
    log = subset_log.load(path)
    facts = subset_log.summary(log)
    s, d, b = log["settings"], log["dataset"], log["budget"]
    info = PlainTable(title=escape(str(path)), show_header=False)
    info.add_row("dataset", f"{d['source']} ({d['num_examples']} examples, {d['num_classes']} classes)")
    info.add_row("fingerprint", d["fingerprint"])
    info.add_row("dynamic", f"{s['kind']}, update rule {s['update_rule']}"
                 + (f" (every {s['every']} epochs)" if s["update_rule"] == "every" else f" (tau {s['tau']})"))
    knobs = {k: s[k] for k in ("subset_size", "batch_size", "posterior_samples", "posterior_sigma", "class_balance",
                               "weighted", "learned_loss") if k in s}
    info.add_row("settings", json.dumps(knobs))
    info.add_row("budget", f"fraction {b['fraction']}: {facts['backprops']} backprops "
                 f"(planned {b['backprops']} = {b['fraction']} x {d['num_examples']} x {b['epochs']} epochs) "
                 f"in {facts['steps']} steps")
    reasons = ", ".join(f"{k} {v}" for k, v in facts["reasons"].items())
    info.add_row("selection points", f"{facts['selection_points']} ({reasons}); {facts['coresets']} coresets")
    if facts["checks"]:
        info.add_row("crest checks", f"{facts['checks']} evaluations of rho, {facts['reselections_by_rho']} re-selections")
    info.add_row("examples selected", f"{facts['distinct_selected']} distinct ({facts['distinct_selected'] / d['num_examples']:.1%}); "
                 f"each {facts['mean_selected']:.2f} times on average, at most {facts['max_selected']}")
    info.add_row("examples trained", f"{facts['distinct_trained']} distinct")
    result = log.get("result") or {}
    if result.get("test_accuracy") is not None:
        info.add_row("test accuracy", f"{result['test_accuracy']:.4f}")
    info.add_row("model, seed", f"{s['model']}, {s['seed']}")
    info.add_row("created", f"{log['created_at']} by prune {log['prune_version']}")
    console.print(info)
    hist = subset_log.counts_histogram(log)
    counts = Table(title="times selected")
    counts.add_column("times", justify="right")
    counts.add_column("examples", justify="right")
    for times, number in enumerate(hist.tolist()):
        if number:
            counts.add_row(str(times), str(number))
    console.print(counts)
    if plot is None:
        return {**facts, "plot": None}
    with finishing():
        subset_log.plot_counts(log, plot, overwrite=overwrite)
    console.print(f"histogram -> {plot}", highlight=False)
    return {**facts, "plot": str(plot)}
