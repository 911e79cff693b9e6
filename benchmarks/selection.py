"""Selection engine benchmark: prune's facility_location against apricot's FacilityLocationSelection.

Both engines optimise the SAME objective, prune's F(S) = sum_i max_{j in S} (D - d(i, j)) with
d Euclidean and D the largest distance: apricot gets ``metric='precomputed'`` with the
similarity matrix D - d (apricot reads a precomputed matrix as similarities, rows = candidates;
its numba kernels need float64). Its own ``metric='euclidean'`` would optimise D^2 - d^2 instead.

For each (n, d) with k = 10% of n, on seeded float32 Gaussian clusters:
  prune:   torch.cdist (float32)                      -> facility_location(distances, k)
  apricot: sklearn pairwise_distances (what apricot    -> FacilityLocationSelection(k,
           itself calls), D - d as float64                 metric='precomputed').fit(S)
Every run is a fresh subprocess (so peak RSS is that run's). Times: (a) whole pipeline,
distances included; (b) the greedy alone. apricot compiles its numba kernels on every fit; the
worker times that on a 50 x 50 fit, then memoises the kernels so that the real fit times the
greedy alone, and reports both (apricot's times as a user sees them are the sums). F(S) of
both selections is evaluated in float64 on one shared (torch, float32) distance matrix.

Physical floor: distances cost 2 n^2 d flops (measured matmul GFLOP/s); the greedy must read the
n x n matrix once (measured read bandwidth) plus every row it re-evaluates.

    python benchmarks/selection.py                 # full run, writes benchmarks/RESULTS.md
    python benchmarks/selection.py --sizes 2000 --dims 10 --repeats 1 --no-write   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
HEADING = "## Selection engine (benchmarks/selection.py)"
SEED = 0
CLUSTERS = 10


def maxrss_mib() -> float:
    """Peak RSS of this process in MiB. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across
    exec, so a child would report its (torch-importing) parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_features(n: int, d: int, seed: int = SEED):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(CLUSTERS, d)).astype(np.float32)
    labels = rng.integers(0, CLUSTERS, size=n)
    return (centers[labels] + rng.normal(size=(n, d)).astype(np.float32)).astype(np.float32)


# --------------------------------------------------------------------------- workers (subprocess)


def worker_prune(x_path: str, k: int, out_path: str) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from prune.selection import engine

    X = torch.from_numpy(np.load(x_path))
    base = maxrss_mib()
    rows = {"n": 0}
    evaluate = engine._GainEvaluator.__call__

    def counting(self, r, m):  # instrumentation only: how many rows the lazy greedy re-read
        rows["n"] += r.numel()
        return evaluate(self, r, m)

    engine._GainEvaluator.__call__ = counting
    t0 = time.perf_counter()
    D = torch.cdist(X, X)
    t1 = time.perf_counter()
    res = engine.facility_location(D, k)
    t2 = time.perf_counter()
    np.save(out_path, res.order.numpy())
    return {
        "distance_s": t1 - t0,
        "greedy_s": t2 - t1,
        "total_s": t2 - t0,
        "rss_base_mib": base,
        "rss_peak_mib": maxrss_mib(),
        "rows_evaluated": rows["n"],
        "objective": res.objective,
    }


def worker_apricot(x_path: str, k: int, out_path: str) -> dict:
    import apricot.functions.facilityLocation as apricot_fl
    import numpy as np
    from apricot import FacilityLocationSelection
    from sklearn.metrics import pairwise_distances

    X = np.load(x_path)
    tiny = np.random.default_rng(0).random((50, 50))
    tiny = (tiny + tiny.T) / 2
    # apricot builds and numba-compiles its gain kernels again in every fit (_initialize). Time
    # that on a tiny fit (after a first one that pays numba's start-up), then memoise the kernel
    # factories so that the real fit below times the greedy alone; apricot's greedy as a user
    # sees it is the sum of the two.
    FacilityLocationSelection(5, metric="precomputed").fit(tiny)
    tc = time.perf_counter()
    FacilityLocationSelection(5, metric="precomputed").fit(tiny)
    compile_s = time.perf_counter() - tc
    for name in ("calculate_gains", "calculate_gains_sieve"):
        factory, built = getattr(apricot_fl, name), {}

        def memo(*args, _factory=factory, _built=built):
            if args not in _built:
                _built[args] = _factory(*args)
            return _built[args]

        setattr(apricot_fl, name, memo)
    FacilityLocationSelection(5, metric="precomputed").fit(tiny)  # compiles into the memo
    base = maxrss_mib()
    t0 = time.perf_counter()
    dist = pairwise_distances(X, metric="euclidean")  # float32 in, float32 out
    S = np.empty(dist.shape, dtype=np.float64)
    np.subtract(np.float64(dist.max()), dist, out=S)  # similarity D - d, float64 for numba
    del dist
    t1 = time.perf_counter()
    sel = FacilityLocationSelection(k, metric="precomputed").fit(S)
    t2 = time.perf_counter()
    np.save(out_path, np.asarray(sel.ranking, dtype=np.int64))
    return {
        "distance_s": t1 - t0,
        "greedy_s": t2 - t1 + compile_s,
        "greedy_nocompile_s": t2 - t1,
        "total_s": t2 - t0 + compile_s,
        "compile_s": compile_s,
        "rss_base_mib": base,
        "rss_peak_mib": maxrss_mib(),
    }


def worker_evaluate(x_path: str, orders: list[str]) -> dict:
    """F(S) of each order, float64, on one shared float32 torch distance matrix."""
    import numpy as np
    import torch

    X = torch.from_numpy(np.load(x_path))
    D = torch.cdist(X, X)
    Dmax = float(D.max())
    out = []
    for path in orders:
        order = torch.from_numpy(np.load(path))
        m = torch.full((D.shape[0],), Dmax, dtype=torch.float64)
        for start in range(0, order.numel(), 256):
            block = D.index_select(1, order[start : start + 256]).double()
            m = torch.minimum(m, block.min(dim=1).values)
        out.append(float((Dmax - m).sum()))
    return {"objectives": out}


def worker_machine() -> dict:
    """Measured float32 matmul GFLOP/s (all threads, the distance step), streaming read GB/s
    (all threads and one thread), and the engine's gain kernel on cold rows (one thread, as the
    engine runs it). Best of several repeats: the least disturbed by other jobs."""
    import torch

    sys.path.insert(0, str(ROOT))
    from prune.selection import engine

    def best(fn, reps):
        fn()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    a = torch.randn(4096, 5130)
    b = torch.randn(5130, 4096)
    gflops = 2 * 4096 * 5130 * 4096 / best(lambda: a @ b, 8) / 1e9
    big = torch.rand(8000, 8000)  # 256 MB, far beyond the caches
    read_gbs = big.numel() * 4 / best(big.sum, 5) / 1e9
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    read1_gbs = big.numel() * 4 / best(big.sum, 5) / 1e9
    W = torch.rand(20000, 20000)  # 1.6 GB: rows come from memory, as in the greedy
    m = torch.rand(20000)
    ev = engine._GainEvaluator(W, None)
    perm = torch.randperm(20000)
    t = time.perf_counter()
    for start in range(0, 20000, 64):
        ev(perm[start : start + 64], m)
    gain_gbs = W.numel() * 4 / (time.perf_counter() - t) / 1e9
    torch.set_num_threads(threads)
    return {"matmul_gflops": gflops, "read_gbs": read_gbs, "read1_gbs": read1_gbs,
            "gain_rows_gbs": gain_gbs, "threads": threads, "cpus": os.cpu_count()}


def run_worker(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", *args],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- driver


def bench_config(n: int, d: int, fraction: float, repeats: int, tmp: Path) -> dict:
    import numpy as np

    x_path = tmp / f"x_{n}_{d}.npy"
    np.save(x_path, make_features(n, d))
    k = round(fraction * n)
    runs = {"prune": [], "apricot": []}
    for r in range(repeats):
        for engine in ("apricot", "prune"):
            out = tmp / f"order_{engine}_{n}_{d}.npy"
            res = run_worker([engine, str(x_path), str(k), str(out)])
            runs[engine].append(res)
            print(f"  n={n} d={d} {engine:8s} rep {r + 1}: total {res['total_s']:.2f} s, "
                  f"greedy {res['greedy_s']:.2f} s, peak {res['rss_peak_mib']:.0f} MiB", flush=True)
    ev = run_worker(["evaluate", str(x_path), str(tmp / f"order_prune_{n}_{d}.npy"),
                     str(tmp / f"order_apricot_{n}_{d}.npy")])
    same = bool(np.array_equal(np.load(tmp / f"order_prune_{n}_{d}.npy"),
                               np.load(tmp / f"order_apricot_{n}_{d}.npy")))
    set_overlap = len(set(np.load(tmp / f"order_prune_{n}_{d}.npy").tolist())
                      & set(np.load(tmp / f"order_apricot_{n}_{d}.npy").tolist())) / k
    x_path.unlink()

    def med(engine, key):
        return statistics.median(r[key] for r in runs[engine])

    out = {"n": n, "d": d, "k": k, "repeats": repeats, "same_order": same, "set_overlap": set_overlap,
           "F_prune": ev["objectives"][0], "F_apricot": ev["objectives"][1]}
    for engine in runs:
        for key in ("distance_s", "greedy_s", "total_s", "rss_peak_mib", "rss_base_mib"):
            out[f"{engine}_{key}"] = med(engine, key)
    out["apricot_compile_s"] = med("apricot", "compile_s")
    out["apricot_greedy_nocompile_s"] = med("apricot", "greedy_nocompile_s")
    out["prune_rows_evaluated"] = runs["prune"][0]["rows_evaluated"]
    return out


def same_text(r: dict) -> str:
    if r["same_order"]:
        return "identical order"
    return f"{100 * r['set_overlap']:.1f}% same set"


def render(results: list[dict], machine: dict, meta: dict) -> str:
    g = machine["matmul_gflops"]
    bw = machine["read_gbs"]
    lines = [
        HEADING,
        "",
        (
            f"Run {meta['date']} on {machine['cpus']} CPU cores (torch threads {machine['threads']}), "
            f"torch {meta['torch']}, numpy {meta['numpy']}, apricot {meta['apricot']}, numba {meta['numba']}; "
            f"load average before the run {meta['load']}. Features: {CLUSTERS} Gaussian clusters, float32, "
            f"seed {SEED}; k = 10% of n; median of the repeats shown. Both engines optimise prune's "
            "F(S) = sum_i max_{j in S} (D - d(i,j)) (apricot via `metric='precomputed'` on the float64 "
            "similarity D - d), and both selections are scored on one shared float32 torch distance "
            "matrix, in float64. apricot's greedy time is its numba compile (paid on every fit, "
            "timed on a 50 x 50 fit) plus its fit with the compiled kernels reused. "
            "Each run is its own subprocess; peak RSS is that process's "
            "`VmHWM` (imports and the feature matrix included; 'work' subtracts the RSS after loading)."
        ),
        "",
        (
            "| n | d | k | pipeline prune / apricot (s) | speed-up | greedy prune / apricot (s) | "
            "speed-up (excl. apricot's compile) | apricot numba compile (s) | F prune / F apricot | same picks | "
            "peak RSS prune / apricot (MiB) | work prune / apricot (MiB) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['n']:,} | {r['d']:,} | {r['k']:,} "
            f"| {r['prune_total_s']:.2f} / {r['apricot_total_s']:.2f} "
            f"| {r['apricot_total_s'] / r['prune_total_s']:.2f}x "
            f"| {r['prune_greedy_s']:.2f} / {r['apricot_greedy_s']:.2f} "
            f"| {r['apricot_greedy_s'] / r['prune_greedy_s']:.2f}x "
            f"({r['apricot_greedy_nocompile_s'] / r['prune_greedy_s']:.2f}x) "
            f"| {r['apricot_compile_s']:.2f} "
            f"| {r['F_prune'] / r['F_apricot']:.6f} "
            f"| {same_text(r)} "
            f"| {r['prune_rss_peak_mib']:.0f} / {r['apricot_rss_peak_mib']:.0f} "
            f"| {r['prune_rss_peak_mib'] - r['prune_rss_base_mib']:.0f} / "
            f"{r['apricot_rss_peak_mib'] - r['apricot_rss_base_mib']:.0f} |"
        )
    lines += [
        "",
        (
            "Physical floor. Measured (best of 8 matmuls / 5 reads, probed before and after the "
            f"runs, the better kept): float32 matmul {g:.0f} GFLOP/s on "
            f"{machine['threads']} threads; streaming read {bw:.1f} GB/s on {machine['threads']} threads, "
            f"{machine['read1_gbs']:.1f} GB/s on one; the engine's gain kernel (gather + subtract + "
            f"clamp + row sum, one thread, rows from memory) {machine['gain_rows_gbs']:.1f} GB/s of "
            "matrix rows. The distance matrix costs 2 n^2 d flops; the greedy must read the n x n "
            "float32 matrix once (initial gains) and then every row it re-evaluates (the floor below "
            "is those bytes at the one-thread streaming rate; prune's greedy runs on one thread):"
        ),
        "",
        (
            "| n | d | distances: floor / prune (s) | greedy: rows re-read | greedy: floor / prune (s) | "
            "prune pipeline vs sum of floors |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        n, d = r["n"], r["d"]
        dist_floor = 2 * n * n * d / (g * 1e9)
        rows = r["prune_rows_evaluated"]
        greedy_floor = (rows + n) * n * 4 / (machine["read1_gbs"] * 1e9)
        lines.append(
            f"| {n:,} | {d:,} | {dist_floor:.2f} / {r['prune_distance_s']:.2f} "
            f"| {rows:,} ({rows / n:.1f} x n) | {greedy_floor:.2f} / {r['prune_greedy_s']:.2f} "
            f"| {r['prune_total_s'] / (dist_floor + greedy_floor):.1f}x |"
        )
    met = []
    for r in results:
        pipe = r["apricot_total_s"] / r["prune_total_s"]
        target = 10 if r["n"] <= 5000 else 5  # issue 13: 10x at n = 5,000, 5x at n = 20,000
        f_ok = r["F_prune"] >= 0.999 * r["F_apricot"]
        met.append(f"n = {r['n']:,}, d = {r['d']:,}: {pipe:.1f}x against {target}x "
                   f"({'met' if pipe >= target else 'not met'}), F {'met' if f_ok else 'NOT met'}")
    lines += ["", "Goal (issue 13): the whole pipeline >= 10x faster than apricot at n = 5,000 and >= 5x at "
              "n = 20,000, F(S) at most 0.1% lower. " + "; ".join(met) + "."]
    lines += ["", meta.get("notes", "").strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_section(text: str) -> None:
    """Replace (or append) our section of RESULTS.md, keeping every other section."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^" + re.escape(HEADING) + r"\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new.rstrip("\n") + "\n")


NOTES = """\
Notes.
- apricot 0.6.1 installs into the project venv with numpy 2.4 / numba 0.68 as they are (no
  pinning, no separate venv needed); it is a benchmark-only dependency. Its lazy greedy wants a
  float64 similarity matrix (twice the bytes of prune's float32 distances, hence its peak RSS)
  and compiles its numba kernels again on every `fit` (the 'compile' column, timed on a second
  50 x 50 fit in the same process; it is inside apricot's greedy and pipeline times, and left
  out of the parenthesised speed-up).
- Picks differ from apricot's only through near-ties: apricot gets sklearn's distances in
  float64, prune torch's in float32, and once one near-tie resolves differently the later picks
  differ too; F agrees to about 1e-5 either way.
- The lazy greedy keeps its bounds in a heap ordered by (bound, pool position) and re-evaluates
  the top stale ones in batches (8, doubling within a step up to 128); it re-reads about 2% more
  rows than one-at-a-time lazy greedy would (n = 5,000, d = 10: 30,493 against 29,938), so the
  row count is what lazy greedy needs. Per row, the eager torch kernel (gather, subtract, clamp,
  sum: four passes) reaches about a third of the one-thread read rate; a fused kernel would be
  the next 2-3x on CPU, and needs compiled code (numba or a C++ compiler for torch.compile at run
  time), which prune does not depend on. apricot's fused numba loop reads float64 rows, which is
  why, without apricot's compile time (the parenthesised speed-up), the greedy alone is only 2-3x
  faster.
- With d = 5,130 the distance matrix dominates both pipelines (2 n^2 d flops); prune's step is
  torch.cdist (float32), apricot's sklearn's pairwise_distances (float32 input, float64
  accumulation). The matmul probe is short and this shared machine's load moves it by 2-3x
  between runs (48-151 GFLOP/s on the same day), so the distance floor is approximate and can
  come out above the measured time; either way the distance step is matmul-bound, and with both
  pipelines paying it, 3x over apricot is out of reach at n = 20,000, d = 5,130 on this CPU. For
  gradient features methods.md's Gram factorisation removes most of these flops.
- prune's engine runs its loop on one CPU thread (`prune.selection.engine.CPU_THREADS`): with two threads
  on this shared machine the same selection was 3-30x slower whenever other jobs ran.
- By hand, not by this script: on an NVIDIA H100 (same engine, distances on the GPU), n = 20,000
  took 0.004-0.08 s for torch.cdist and 1.2 s (d = 10) / 1.7 s (d = 5,130) for the greedy, with
  the same picks as the CPU engine; per-step launch and sync overhead dominates there.
- Timings on this shared 2-core machine vary by 10-50% between runs while other jobs run; the
  load average above says how busy it was."""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--dims", type=int, nargs="+", default=[10, 5130])
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeats-large", type=int, default=1,
                    help="repeats for configs with n*n*d >= 1e12 (the ~1 minute distance runs)")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = ap.parse_args(argv)

    import apricot
    import numba
    import numpy
    import torch

    meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "numpy": numpy.__version__,
            "apricot": apricot.__version__, "numba": numba.__version__,
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()), "notes": NOTES}
    machine = run_worker(["machine"])
    print(f"machine: {machine}", flush=True)
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="prune-bench-") as tmp:
        for n in args.sizes:
            for d in args.dims:
                reps = args.repeats_large if n * n * d >= 1e12 else args.repeats
                results.append(bench_config(n, d, args.fraction, reps, Path(tmp)))
                print(json.dumps(results[-1]), flush=True)
    # Probe the machine again at the end and keep the best of both: a probe that ran while
    # other jobs were busy would understate the machine and so the floors.
    again = run_worker(["machine"])
    print(f"machine again: {again}", flush=True)
    for key in ("matmul_gflops", "read_gbs", "read1_gbs", "gain_rows_gbs"):
        machine[key] = max(machine[key], again[key])
    print(f"benchmark took {time.perf_counter() - t0:.0f} s", flush=True)
    text = render(results, machine, meta)
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "prune":
            res = worker_prune(rest[0], int(rest[1]), rest[2])
        elif kind == "apricot":
            res = worker_apricot(rest[0], int(rest[1]), rest[2])
        elif kind == "evaluate":
            res = worker_evaluate(rest[0], rest[1:])
        elif kind == "machine":
            res = worker_machine()
        else:
            raise SystemExit(f"unknown worker {kind}")
        print(json.dumps(res))
    else:
        main()
