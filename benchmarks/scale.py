"""`prune select` at scale: wall time and peak RSS on a synthetic store, as n grows.

A synthetic store of n examples, C classes, M = 1 posterior sample and embedding width e is written
through prune's own store writer (``prune.features.store.create_store``): logits drawn from N(0,
2^2) with 6 added to the label's (so that, as after a real warm-up, the difficulty stage's ``auto``
drops a few per cent: those with p_y < 1/C), p their softmax, g = p - y, a = p (1 - p), h a ReLU of
a normal draw, two warm-up checkpoints. Rows are stored class by class (the labels sorted), so that
a class's rows lie in few of the 1,024-row chunks. Then `prune select --features` runs each method
at the budget in its own process; wall time and peak RSS (``VmHWM`` of that process, from
``wait4``) are reported, and the store is deleted.

    python benchmarks/scale.py --rows 100000 --rows 1000000 [--classes 1000] [--methods craig,lcmat,random]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from prune.features.store import CHUNK_ROWS, create_store


def write_store(path: Path, n: int, classes: int, width: int, seed: int = 0) -> None:
    """The synthetic store, CHUNK_ROWS rows at a time (memory: one block)."""
    counts = np.bincount(np.arange(n) % classes, minlength=classes)
    labels = np.repeat(np.arange(classes), counts)
    attrs = {"dataset": {"source": "synthetic", "split": "train", "num_examples": n, "num_classes": classes,
                         "fingerprint": f"synthetic-{n}-{classes}", "class_counts": counts.tolist()},
             "fingerprint": f"synthetic-{n}-{classes}", "num_classes": classes, "features": {"model": "synthetic"},
             "seed": seed}
    generator = torch.Generator().manual_seed(seed)
    with create_store(path, labels=labels, flipped=np.empty(0), attrs=attrs, samples=1, num_classes=classes,
                      embedding_dim=width, checkpoints=2, dtype="float32") as writer:
        for start in range(0, n, CHUNK_ROWS):
            y = torch.from_numpy(labels[start:start + CHUNK_ROWS])
            onehot = torch.nn.functional.one_hot(y, classes).float()
            p = (torch.randn(len(y), classes, generator=generator) * 2 + 6 * onehot).softmax(-1)
            g = p - onehot
            a = p * (1 - p)
            writer.write_rows("grad_logit", start, g, sample=0)
            writer.write_rows("hess_logit", start, a, sample=0)
            writer.write_rows("embedding", start, torch.randn(len(y), width, generator=generator).relu(), sample=0)
            writer.write_rows("grad_logit_ema", start, g)
            writer.write_rows("hess_logit_ema", start, a)
            writer.write_rows("loss_per_epoch", start, -torch.log(p.gather(1, y[:, None])).expand(-1, 2))


def run_select(store: Path, method: str, fraction: float, out: Path) -> tuple[float, float, int]:
    """(wall s, peak RSS GiB, exit code) of one `prune select` in its own process."""
    command = [sys.executable, "-m", "prune", "select", "--features", str(store), "--method", method,
               "--fraction", str(fraction), "--out", str(out)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status:
        print(child.stderr.read().decode()[-2000:], file=sys.stderr)
    return wall, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", required=True)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--methods", default="craig,lcmat,random")
    parser.add_argument("--folder", type=Path, default=None, help="where the store is written (default: a temporary folder)")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| n | C | store (GB) | write (s) | method | wall (s) | peak RSS (GiB) |")
    print("|---|---|---:|---:|---|---:|---:|")
    for n in args.rows:
        with tempfile.TemporaryDirectory(dir=args.folder) as folder:
            store = Path(folder) / "synthetic.h5"
            start = time.perf_counter()
            write_store(store, n, args.classes, args.width)
            written = time.perf_counter() - start
            size = store.stat().st_size / 1e9
            for method in args.methods.split(","):
                wall, rss, code = run_select(store, method, args.fraction, Path(folder) / f"{method}.json")
                status = "" if code == 0 else f" (exit {code})"
                print(f"| {n:,} | {args.classes:,} | {size:.2f} | {written:.0f} | {method}{status} | {wall:.1f} | {rss:.2f} |",
                      flush=True)
    load = os.getloadavg()
    print(f"load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
