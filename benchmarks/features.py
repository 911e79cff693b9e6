"""Benchmark: cost of feature extraction relative to a plain inference pass.

One run measures, over the whole training set, with the same batch size:

* ``plain``  — ``model(x)`` in eval mode under ``torch.no_grad()``, outputs discarded;
* ``M = 1``  — :func:`prune.features.extract.extract_batches` (closed-form features, CPU float32 output);
* ``M = 4``  — four :func:`~prune.features.extract.extract_batches` passes, each inside
  :func:`~prune.features.posterior.perturbed` (spherical Gaussian on the BatchNorm affine parameters).

and reports ``features_time / (M * plain_time)`` (goal <= 1.3). Every measurement is repeated
and interleaved chunk by chunk (against load from other processes sharing the cores); minimum
and median are reported. With ``--section`` the result replaces the section
"## Feature extraction (benchmarks/features.py)" of ``benchmarks/RESULTS.md`` (other sections
kept).

Default setup: Fashion-MNIST (60,000 train images, the IDX files in ``$PRUNE_DATA_ROOT``) and
``build_model("lenet", ...)`` from ``prune.models``; ``--synthetic`` uses a LeNet of its own and
random 60000 x 1 x 28 x 28 inputs instead.

    PRUNE_DATA_ROOT=/path/to/fashion-mnist python benchmarks/features.py --section
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prune.features import extract_batches, perturbed, posterior_parameters  # noqa: E402

from benchmarks.report import cpu_name, load_average, write_section  # noqa: E402

SECTION = "## Feature extraction (benchmarks/features.py)"


class _LeNet(nn.Module):
    """Fallback LeNet (BatchNorm after each convolution) with the prune model interface."""

    def __init__(self, channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveMaxPool2d(5),
            nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        )
        self.fc = nn.Linear(84, num_classes)

    def embed(self, x):
        return self.body(x)

    def forward(self, x):
        return self.fc(self.embed(x))


def load(synthetic: bool, model_name: str):
    if not synthetic:
        from prune.data import load_dataset
        from prune.models import build_model

        data = load_dataset("fashion-mnist")  # the IDX files in $PRUNE_DATA_ROOT
        x, y = data.train.x, data.train.y
        model = build_model(model_name, tuple(x.shape[1:]), int(data.num_classes))
        return model, x, y, f"Fashion-MNIST train ({len(y)} images), prune.models {model_name!r}"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60000, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (60000,), generator=g)
    return _LeNet(), x, y, "random 60000x1x28x28 inputs, local LeNet"


def plain_pass(model, x, batch_size, device):
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size].to(device))


def feature_pass(model, x, y, batch_size, device):
    for _ in extract_batches(model, x, y, batch_size=batch_size, device=device):
        pass


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=4, help="M of the perturbed run")
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=0,
                    help="examples per interleaving chunk, rounded to whole batches "
                         "(default: one batch)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--section", action="store_true", help="write benchmarks/RESULTS.md")
    args = ap.parse_args()

    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, x, y, what = load(args.synthetic, args.model)
    model = model.to(device).eval()
    params, layers = posterior_parameters(model, "bn")
    M, bs = args.samples, args.batch_size

    chunk = max(bs, (args.chunk // bs) * bs)  # whole batches per chunk

    def perturbed_passes(xc, yc):
        # member m uses the same delta_m (seed m) on every chunk: as M full passes
        for m in range(M):
            with perturbed(model, params, args.sigma, torch.Generator().manual_seed(m)):
                feature_pass(model, xc, yc, bs, device)

    runs = {
        "plain": lambda xc, yc: plain_pass(model, xc, bs, device),
        "m1": lambda xc, yc: feature_pass(model, xc, yc, bs, device),
        "mM": perturbed_passes,
    }
    keys = tuple(runs)
    for k in keys:  # warm-up (allocator, kernels)
        runs[k](x[: 2 * bs], y[: 2 * bs])
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    load_before = load_average()
    for r in range(args.repeats):
        tw = dict.fromkeys(keys, 0.0)
        tc = dict.fromkeys(keys, 0.0)
        # interleave the three measurements chunk by chunk, so that bursts of load from other
        # processes hit all three alike; the sums cover the whole training set each
        for i, start in enumerate(range(0, len(x), chunk)):
            xc, yc = x[start : start + chunk], y[start : start + chunk]
            shift = (i + r) % len(keys)  # rotate the order: no pass is always first
            for k in keys[shift:] + keys[:shift]:
                w, c = timed(lambda: runs[k](xc, yc))
                tw[k] += w
                tc[k] += c
        for k in keys:
            wall[k].append(tw[k])
            cpu[k].append(tc[k])
        print(
            f"repeat {r + 1}: wall plain {wall['plain'][-1]:.2f}s, M=1 {wall['m1'][-1]:.2f}s, "
            f"M={M} {wall['mM'][-1]:.2f}s; cpu {cpu['plain'][-1]:.2f} / {cpu['m1'][-1]:.2f} / "
            f"{cpu['mM'][-1]:.2f}s",
            flush=True,
        )
    passes = {"plain": 1, "m1": 1, "mM": M}

    def ratios(table, reduce):
        base = reduce(table["plain"])
        return {k: reduce(table[k]) / (passes[k] * base) for k in ("m1", "mM")}

    rw_min, rw_med = ratios(wall, min), ratios(wall, statistics.median)
    rc_min = ratios(cpu, min)

    def fmt(v):
        return ", ".join(f"{t:.2f}" for t in v)

    def row(k, label):
        if k == "plain":
            r = "—"
        else:
            r = f"**{rw_min[k]:.3f}** / {rw_med[k]:.3f} / {rc_min[k]:.3f}"
        return (
            f"| {label} | {min(wall[k]):.2f} | {statistics.median(wall[k]):.2f} | "
            f"{fmt(wall[k])} | {min(cpu[k]):.2f} | {r} |"
        )

    worst = max(rw_min.values())
    body = f"""
Machine: {cpu_name()}, {torch.get_num_threads()} torch threads ({platform.machine()}, \
torch {torch.__version__}, device {device}). Load average (1/5/15 min) before the run \
{load_before}, after {load_average()}: other jobs share the 2 cores, so wall times are noisy;
the three passes are interleaved chunk by chunk ({chunk} examples: plain, M = 1 and the M
perturbed passes over that chunk, in rotating order, the same delta_m on every chunk; each
pass's time is summed over the whole training set); the table gives the minimum (least disturbed) and the median of
{args.repeats} repeats, and process CPU time.
Data: {what}; batch size {bs}; posterior group {layers!r}, sigma {args.sigma}.
Command: `python benchmarks/features.py --repeats {args.repeats} --section`.

| pass | wall min (s) | wall median (s) | wall, each repeat (s) | CPU min (s) | features / (M x plain): wall min / wall median / CPU min |
|---|---:|---:|---|---:|---:|
{row("plain", "plain inference, `model(x)` in eval, no_grad")}
{row("m1", "`extract_batches`, M = 1")}
{row("mM", f"`extract_batches` under `perturbed`, M = {M}")}

Goal: ratio <= 1.3 — {"met" if worst <= 1.3 else "NOT met"} (wall min: {worst:.3f}). Per batch the
features cost one forward (`embed`, then `fc` on the embedding) plus O(b C) closed forms; on the
CPU the float32 outputs are the computed tensors themselves (no copy). Perturbing costs one
`randn` and one copy per perturbed parameter per posterior sample.
"""
    print(body)
    if args.section:
        write_section(ROOT / "benchmarks" / "RESULTS.md", SECTION, body)
        print(f"wrote {ROOT / 'benchmarks' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
