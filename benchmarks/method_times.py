"""Benchmark: selection time per method from a feature store (issue 29).

For each store and method, two measurements, repeated and interleaved across methods (the order
rotates from one round to the next, against load from other processes sharing the cores):

* the command, ``prune select --features STORE --method M --fraction F --seed 0 --out TMP
  --device cpu --quiet`` in its own process: wall time (start-up, reading, selecting, writing)
  and the child's CPU time (user + system; less sensitive to load than wall time);
* the selection alone, in this process: ``prune.select(...)`` timed around the call (no start-up).

It prints, per store, a markdown table of medians with "- random" (command) and "/ craig"
(command and selection alone), and checks the issue's goals: from the Fashion-MNIST store (M = 4,
5 %) at most 3 s more than ``random``; from the CIFAR-10 store (M = 4, 10 %) at most 3x craig's
command time. ``--before COMMIT`` also times ``herding`` (``--before-methods``) as it was at COMMIT
(``git archive COMMIT prune`` into a temporary folder, first on PYTHONPATH). ``--section``
writes the result into the section "## Selection time per method (issue 29)" of
``benchmarks/RESULTS.md`` (other sections kept).

    python benchmarks/method_times.py --fm /tmp/fm-M4.h5 --cifar c10-M4.h5 --repeats 3 --section
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import prune  # noqa: E402
from prune.features.store import FeatureStore  # noqa: E402
from prune.selection.budget import Budget  # noqa: E402
from prune.selection.methods.base import MethodConfig  # noqa: E402

from benchmarks.report import cpu_name, load_average, write_section  # noqa: E402

SECTION = "## Selection time per method (issue 29)"
#: the papers' methods and the field's (the slower facility-location variants with --methods all)
DEFAULT_METHODS = ("random", "clean", "ccs", "herding", "craig", "el2n", "grand", "forgetting", "aum", "entropy",
                   "least_confidence", "kcenter", "moderate", "d2", "dual")
MORE_METHODS = ("adacore", "lcmat", "ensemble", "crest")




def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(store: Path, method: str, fraction: float, out: Path, pythonpath: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``prune select`` in its own process (prune imported from ``pythonpath``)."""
    cmd = [sys.executable, "-m", "prune", "select", "--features", str(store), "--method", method,
           "--fraction", str(fraction), "--seed", "0", "--out", str(out), "--overwrite", "--device", "cpu", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    cpu = children_cpu()
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=out.parent, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return wall, children_cpu() - cpu


def run_in_process(store: Path, method: str, fraction: float) -> tuple[float, dict]:
    """Seconds of ``prune.select`` alone, and the manifest's selection facts."""
    start = time.perf_counter()
    manifest = prune.select(method=MethodConfig(name=method), budget=Budget(fraction=fraction), features=store,
                            seed=0, device="cpu")
    return time.perf_counter() - start, manifest.selection


def probe_rates() -> dict:
    """float32 matmul GFLOP/s (the distances' Gram products' shape) and streaming read GB/s, one and all threads."""
    rates = {}
    a, b = torch.randn(45, 85), torch.randn(85, 6000)
    out = torch.empty(45, 6000)
    x = torch.randn(64 << 20 >> 2)  # 64 MiB
    previous = torch.get_num_threads()
    for threads in sorted({1, previous}):
        torch.set_num_threads(threads)
        best = min(_timed(lambda: [torch.mm(a, b, out=out) for _ in range(200)]) for _ in range(5))
        rates[f"gflops_{threads}"] = 200 * 2 * 45 * 85 * 6000 / best / 1e9
        best = min(_timed(lambda: x.sum()) for _ in range(5))
        rates[f"read_gbs_{threads}"] = x.numel() * 4 / best / 1e9
    torch.set_num_threads(previous)
    return rates


def _timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def herding_floor(store_path: Path, facts: dict, rates: dict) -> dict:
    """What herding cannot avoid on this store, from its pools (class sizes less the stage's drops)."""
    with FeatureStore.open(store_path) as store:
        counts = torch.bincount(store.labels, minlength=store.num_classes).tolist()
        samples = store.posterior_samples
        classes, width = store.grad_logit.shape[-1], store.embedding.shape[-1]
        feature_bytes = 4 * len(store.labels) * samples * (classes + width)
    pools = [n - dropped for n, dropped in zip(counts, facts.get("dropped_hard", [0] * len(counts)))]
    pairs = sum(p * (p - 1) // 2 for p in pools)
    flops = pairs * samples * 2 * (classes + width + 1)  # <g_i, g_j> and <[h_i; 1], [h_j; 1]> per pair and sample
    upper_bytes = sum(2 * p * p for p in pools)  # float32 upper triangle, written once
    threads = torch.get_num_threads()
    return {"pools": pools, "pairs": pairs, "flops": flops, "upper_bytes": upper_bytes, "feature_bytes": feature_bytes,
            "samples": samples, "classes": classes, "width": width,
            "gemm_s": flops / (rates[f"gflops_{threads}"] * 1e9),
            # the upper triangle written once and read by the median's pass and the kernel's pass
            "memory_s": 3 * upper_bytes / (rates[f"read_gbs_{threads}"] * 1e9)}


def measure(store: Path, fraction: float, methods: list[str], repeats: int, before: Path | None,
            before_methods: list[str], work: Path) -> dict:
    rows = {m: {"wall": [], "cpu": [], "alone": []} for m in methods}
    for m in before_methods:
        rows[f"{m} (before)"] = {"wall": [], "cpu": [], "alone": []}
    facts = {}
    run_in_process(store, "random", fraction)  # imports and first-call costs, outside the timings
    for r in range(repeats):
        order = methods[r % len(methods):] + methods[: r % len(methods)]
        for m in order:
            wall, cpu = run_command(store, m, fraction, work / f"{m}.json", ROOT)
            rows[m]["wall"].append(wall)
            rows[m]["cpu"].append(cpu)
            alone, facts[m] = run_in_process(store, m, fraction)
            rows[m]["alone"].append(alone)
            print(f"  round {r + 1}: {m} {wall:.2f} s, alone {alone:.2f} s (load {load_average()})", file=sys.stderr,
                  flush=True)
            if m in before_methods and before is not None:
                wall, cpu = run_command(store, m, fraction, work / f"{m}-before.json", before)
                rows[f"{m} (before)"]["wall"].append(wall)
                rows[f"{m} (before)"]["cpu"].append(cpu)
                print(f"  round {r + 1}: {m} (before) {wall:.2f} s", file=sys.stderr, flush=True)
    same = {}
    for m in before_methods:
        now, then = (json.loads((work / f"{m}{tag}.json").read_text()) for tag in ("", "-before"))
        shared = len(set(now["indices"]) & set(then["indices"]))
        same[m] = (f"{m}: {shared:,} of {len(then['indices']):,} picks the same as before, objective "
                   f"{then['selection'].get('objective')} before, {now['selection'].get('objective')} now")
    return {"rows": rows, "facts": facts, "same": same}


def table(name: str, store: Path, fraction: float, result: dict, goal: str) -> tuple[str, list[str]]:
    rows = result["rows"]
    med = {m: {k: statistics.median(v) if v else None for k, v in row.items()} for m, row in rows.items()}
    rnd, craig = med.get("random"), med.get("craig")
    lines = [f"**{name}** (`{store}`), {fraction:.0%} kept, medians of {len(rows['random']['wall'])} rounds:", "",
             "| method | command wall (s) | − random (s) | ÷ craig | command CPU (s) | CPU − random (s) | "
             "selection alone (s) | alone ÷ craig | goal |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    verdicts = []
    for m, t in med.items():
        minus = t["wall"] - rnd["wall"] if rnd else None
        ratio = t["wall"] / craig["wall"] if craig else None
        alone_ratio = t["alone"] / craig["alone"] if craig and t["alone"] is not None else None
        if goal == "minus":
            ok = minus is not None and minus <= 3.0
            verdict = f"{'met' if ok else 'not met'} ({minus:+.1f} s ≤ 3 s)" if minus is not None else ""
        else:
            ok = ratio is not None and ratio <= 3.0
            verdict = f"{'met' if ok else 'not met'} ({ratio:.2f}x ≤ 3x)" if ratio is not None else ""
        if m in ("random", "craig") or " (before)" in m:
            verdict = "—" if " (before)" not in m else verdict + " (before)"
        else:
            verdicts.append(f"{m}: {'met' if ok else 'NOT met'}")
        fmt = lambda v, spec: format(v, spec) if v is not None else "—"  # noqa: E731
        lines.append(f"| {m} | {t['wall']:.2f} | {fmt(minus, '+.2f')} | {fmt(ratio, '.2f')} | {t['cpu']:.2f} | "
                     f"{fmt(t['cpu'] - rnd['cpu'] if rnd else None, '+.2f')} | {fmt(t['alone'], '.2f')} | "
                     f"{fmt(alone_ratio, '.2f')} | {verdict} |")
    return "\n".join(lines), verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fm", type=Path, help="Fashion-MNIST store (M = 4)")
    ap.add_argument("--fm-fraction", type=float, default=0.05)
    ap.add_argument("--cifar", type=Path, help="CIFAR-10 store (M = 4)")
    ap.add_argument("--cifar-fraction", type=float, default=0.10)
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help=f"comma-separated; 'all' adds {', '.join(MORE_METHODS)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--before", help="a commit whose herding is timed too (git archive into a temporary folder)")
    ap.add_argument("--before-methods", default="herding")
    ap.add_argument("--section", action="store_true", help="write benchmarks/RESULTS.md")
    args = ap.parse_args()
    methods = list(DEFAULT_METHODS + MORE_METHODS) if args.methods == "all" else args.methods.split(",")
    for needed in ("random", "craig"):
        if needed not in methods:
            methods.insert(0, needed)
    stores = [(n, s, f, g) for n, s, f, g in (("Fashion-MNIST", args.fm, args.fm_fraction, "minus"),
                                               ("CIFAR-10", args.cifar, args.cifar_fraction, "ratio")) if s]
    if not stores:
        raise SystemExit("give --fm and/or --cifar (feature stores with M = 4 posterior samples)")
    load_before = load_average()
    rates = probe_rates()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        before = None
        if args.before:
            before = work / "before"
            before.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "prune"], capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        before_methods = args.before_methods.split(",") if before else []
        results = {}
        for name, store, fraction, goal in stores:
            print(f"{name}: {store}", file=sys.stderr)
            results[name] = measure(store, fraction, methods, args.repeats, before, before_methods, work)
    load_after = load_average()
    parts, verdicts = [], {}
    for name, store, fraction, goal in stores:
        text, verdicts[name] = table(name, store, fraction, results[name], goal)
        parts.append(text)
    floor_lines = []
    for name, store, fraction, goal in stores:
        if "herding" not in results[name]["facts"]:
            continue
        f = herding_floor(store, results[name]["facts"]["herding"], rates)
        alone = statistics.median(results[name]["rows"]["herding"]["alone"])
        clean = results[name]["rows"].get("clean", {}).get("alone")
        own = f" ({alone - statistics.median(clean):.2f} s more than `clean`, its difficulty stage alone)" \
            if clean else ""
        floor_lines.append(
            f"- {name}: pools {', '.join(f'{p:,}' for p in f['pools'])} (M = {f['samples']}, C = {f['classes']}, "
            f"e = {f['width']}): {f['pairs'] / 1e6:.0f} M pairs, {f['flops'] / 1e9:.0f} GFLOP of Gram products "
            f"({f['gemm_s']:.2f} s at the probed matmul rate), the float32 upper triangles "
            f"{f['upper_bytes'] / 1e6:.0f} MB written once and read twice ({f['memory_s']:.2f} s at the probed read "
            f"rate), the store's M samples' features {f['feature_bytes'] / 1e6:.0f} MB read once: floor about "
            f"{f['gemm_s'] + f['memory_s']:.2f} s of compute against {alone:.2f} s for the whole selection in process"
            f"{own}.")
    threads = torch.get_num_threads()
    same = [f"- {name}: {line}" for name, *_ in stores for line in results[name]["same"].values()]
    body = f"""Run {time.strftime('%Y-%m-%d')} on {cpu_name()}, {os.cpu_count()} cores, {threads} torch threads \
({platform.machine()}, torch {torch.__version__}), shared with other jobs: load average (1/5/15 min) \
{load_before} before the run, {load_after} after. Probed: float32 matmul \
{rates['gflops_1']:.0f} GFLOP/s on one thread, {rates[f'gflops_{threads}']:.0f} on {threads}; streaming \
read {rates['read_gbs_1']:.1f} GB/s on one thread, {rates[f'read_gbs_{threads}']:.1f} on {threads}. Each \
method is run \
as `prune select --features STORE --method M --fraction F --seed 0 --device cpu --quiet` in its own process \
(command wall and CPU time: start-up, reading, selecting, writing), then as `prune.select(...)` in the \
benchmark's process (selection alone), methods interleaved, {args.repeats} rounds, medians. Command: \
`python benchmarks/method_times.py{' --fm STORE' if args.fm else ''}{' --cifar STORE' if args.cifar else ''} \
--repeats {args.repeats}{f' --before {args.before}' if args.before else ''} --section`.

{chr(10).join(p + chr(10) for p in parts)}
Goals (issue 29): from the Fashion-MNIST store at most 3 s more than `random` (command wall time);
from the CIFAR-10 store at most 3x craig's. {'; '.join(f"{n}: {', '.join(v)}" for n, v in verdicts.items())}.

Herding's floor (what it cannot avoid: the Gram products of every pair in every posterior sample,
the kernel of every pair, the features read):
{chr(10).join(floor_lines)}
{("Picks of the same command before and now:" + chr(10) + chr(10).join(same) + chr(10)) if same else ""}"""
    print(body)
    if args.section:
        write_section(ROOT / "benchmarks" / "RESULTS.md", SECTION, body)


if __name__ == "__main__":
    main()
