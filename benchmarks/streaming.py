"""Streamed image sources: peak memory of `prune features` against the number of images, and the
speed of CIFAR's streamed uint8 path against the same images held in memory (an npz).

Sizes: `folder:` (PNG files) and `hf:` (a `save_to_disk` dataset of PIL images) of the first N
Fashion-MNIST training images, N = 5,000 and 50,000; `prune features --model lenet
--warmup-epochs 1 --posterior-samples 1` on each, in a fresh process, its peak RSS from
`getrusage` (median and range of `--repeats` runs: it varies by about 0.1 GB from run to run). Speed: 50,000 random 32 x 32 x 3 uint8 images with random labels written as a
CIFAR-10 folder (torchvision's pickled batches; the checksum check is patched out in the
child, the files are not the real ones) and as an npz; `prune features` and `prune train
--epochs 1` on each. Prints a markdown section; with `--section` writes it into
benchmarks/RESULTS.md. Everything is built in a temporary folder and deleted.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT.parent / "shared" / "data" / "fashion-mnist"
TITLE = "## Streamed image sources (issue 14)"
# runs the CLI in a child with torchvision's CIFAR checksum check patched out; at exit it prints the
# peak RSS (kB) of itself and of its largest worker process
CHILD = ("import atexit, resource, sys, torchvision.datasets.cifar as c; "
         "c.check_integrity = lambda *a, **k: True; c.CIFAR10._check_integrity = lambda self: True; "
         "atexit.register(lambda: print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
         "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)); "
         "from prune.cli import app; sys.argv = ['prune', *sys.argv[1:]]; app()")


def timed_child(args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS of the process, of its largest worker, in GB) of `prune ARGS` in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"prune {' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")
    own, workers = (int(v) * 1024 / 1e9 for v in done.stderr.rsplit("PEAK", 1)[1].split()[:2])
    return wall, own, workers


def fashion(n: int) -> tuple[np.ndarray, np.ndarray]:
    from prune.data.idx import _read_idx

    return (_read_idx(FASHION / "train-images-idx3-ubyte.gz", images=True)[:n],
            _read_idx(FASHION / "train-labels-idx1-ubyte.gz", images=False)[:n].astype(np.int64))


def write_folder(path: Path, x, y) -> str:
    from PIL import Image

    for i, (image, label) in enumerate(zip(x, y)):
        folder = path / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:06d}.png")
    return f"folder:{path}"


def write_hf(path: Path, x, y) -> str:
    import datasets
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in x], "label": y.tolist()},
                                    features=features)
    ds.save_to_disk(str(path))
    return f"hf:{path}"


def write_cifar(root: Path, x, y) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    test = slice(0, 10_000)
    for i, part in enumerate(np.array_split(np.arange(len(x)), 5)):
        rows = x[part].transpose(0, 3, 1, 2).reshape(len(part), -1)
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps({"data": rows, "labels": y[part].tolist()}))
    rows = x[test].transpose(0, 3, 1, 2).reshape(-1, 3072)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": rows, "labels": y[test].tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="5000,50000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--section", action="store_true", help="write benchmarks/RESULTS.md")
    args = ap.parse_args()
    features = ["features", "--model", "lenet", "--warmup-epochs", "1", "--posterior-samples", "1",
                "--device", "cpu", "--quiet", "--overwrite"]
    lines = [TITLE, "", "`prune features` (LeNet, 1 warm-up epoch, M = 1), whole command in a fresh process, "
             "peak RSS; the first N Fashion-MNIST training images (28 x 28 grey):", "",
             f"| source | images | wall (s) | peak RSS (GB), median of {args.repeats} (range) | largest worker's (GB) |",
             "|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        peaks = {}
        for n in sorted(int(s) for s in args.sizes.split(",")):
            x, y = fashion(n)
            for kind, write in (("folder", write_folder), ("hf", write_hf)):
                spec = write(tmp / f"{kind}-{n}", x, y)
                runs = sorted(timed_child([*features, "--dataset", spec, "--out", tmp / f"{kind}-{n}.h5"])
                              for _ in range(args.repeats))
                walls, own, workers = (sorted(values) for values in zip(*runs))
                peak = own[len(own) // 2]
                peaks.setdefault(kind, []).append(peak)
                lines.append(f"| `{kind}:` | {n:,} | {walls[len(walls) // 2]:.1f} | {peak:.2f} ({own[0]:.2f}-{own[-1]:.2f}) "
                             f"| {max(workers):.2f} |")
                print(lines[-1], flush=True)
        lines.append("")
        for kind, values in peaks.items():
            lines.append(f"- `{kind}:` the median peak RSS grew {100 * (values[-1] / values[0] - 1):+.0f} % "
                         f"over a {args.sizes.split(',')[-1]}/{args.sizes.split(',')[0]} growth in images.")
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, 50_000)
        write_cifar(tmp / "cifar", x, y)
        np.savez(tmp / "cifar.npz", x_train=x, y_train=y, x_test=x[:10_000], y_test=y[:10_000])
        lines += ["", "CIFAR-sized data, 50,000 training and 10,000 test images of random 32 x 32 x 3 pixels "
                  "(only the data path is timed): `cifar10` streamed from its uint8 arrays against the same "
                  "images as an npz (a float32 tensor in memory), alternating:", "",
                  "| command | `npz:` (in memory) | `cifar10` (streamed) |", "|---|---:|---:|"]
        commands = {"features": [*features, "--out", tmp / "c.h5"],
                    "train --epochs 1": ["train", "--model", "lenet", "--epochs", "1", "--device", "cpu", "--quiet"]}
        sources = {"npz": ["--dataset", f"npz:{tmp / 'cifar.npz'}"],
                   "cifar10": ["--dataset", "cifar10", "--data-root", tmp / "cifar"]}
        for name, command in commands.items():
            cells = {kind: [] for kind in sources}
            for _ in range(2):
                for kind, source in sources.items():
                    cells[kind].append(timed_child([*command, *source])[0])
            lines.append(f"| `prune {name}` | " + " | ".join(" / ".join(f"{v:.1f} s" for v in cells[kind])
                                                          for kind in sources) + " |")
            print(lines[-1], flush=True)
    lines += ["", "Command: `python benchmarks/streaming.py --section`."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.section:
        results = ROOT / "benchmarks" / "RESULTS.md"
        body = results.read_text()
        if TITLE in body:
            start = body.index(TITLE)
            end = body.find("\n## ", start + 1)
            body = body[:start] + text + (body[end + 1:] if end != -1 else "")
        else:
            body = body.rstrip("\n") + "\n\n" + text
        results.write_text(body)


if __name__ == "__main__":
    main()
