"""Would a smaller store layout change picks? float16 values, or the logit gradient kept sparse.

Issue 13 asks whether the dense C-wide arrays (the logit gradient g = p - y and Hessian diagonal
a = p (1 - p), most of a many-class store) could be stored as float16, or as the top-k entries of
each row, without changing what `prune select` picks. This reads a store into memory, builds the
variant in memory, and runs the same selection on both:

* ``float16``: every feature array rounded to float16 (what ``prune features --dtype float16``
  stores);
* ``top-K``: per row and posterior sample, the K entries of g largest in magnitude kept, the rest
  of g zeroed, and a kept at the same coordinates (a sparse layout would store those K indices
  and 2 K values instead of 2 C values).

Reported per method: the picks shared with the dense float32 store (the variants' objectives are
over other distances, so they are not compared).

    python benchmarks/layout.py STORE [--methods craig,lcmat] [--fraction 0.1] [--top-k 3,32]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from prune.features.store import PER_SAMPLE, POINT, FeatureStore
from prune.selection import Candidates, select

ARRAYS = (*PER_SAMPLE, *POINT, "grad_logit_ema", "hess_logit_ema")  # every feature array of a store


def in_memory(store: FeatureStore) -> FeatureStore:
    """The store with every feature array read."""
    return dataclasses.replace(store, **{name: getattr(store, name)[:] for name in ARRAYS
                                         if getattr(store, name) is not None})


def rounded(store: FeatureStore) -> FeatureStore:
    return dataclasses.replace(store, **{name: getattr(store, name).half().float() for name in ARRAYS
                                         if getattr(store, name) is not None})


def top_k(store: FeatureStore, k: int) -> FeatureStore:
    """g keeps its k largest-magnitude entries per row, a the same coordinates; the rest are 0."""
    changed = {}
    for grad, hess in (("grad_logit", "hess_logit"), ("grad_logit_ema", "hess_logit_ema"),
                       ("grad_logit_point", "hess_logit_point")):
        g, a = getattr(store, grad), getattr(store, hess)
        if g is None:
            continue
        keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(k, dim=-1).indices, True)
        changed[grad], changed[hess] = g * keep, a * keep
    return dataclasses.replace(store, **changed)


def picks(store: FeatureStore, method: str, fraction: float) -> set[int]:
    return set(select(Candidates.from_store(store), method, fraction=fraction, seed=0).indices.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--methods", default="craig,lcmat")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--top-k", default="3,32")
    args = parser.parse_args()
    dense = in_memory(FeatureStore.open(args.store))
    variants = [("float16", rounded(dense))] + [(f"top-{k}", top_k(dense, int(k)))
                                                for k in args.top_k.split(",") if int(k) < dense.num_classes]
    print(f"{args.store}: n = {dense.num_examples:,}, C = {dense.num_classes}, M = {dense.posterior_samples}, "
          f"{args.fraction:.0%}, seed 0")
    print("| method | layout | picks shared with float32 |")
    print("|---|---|---:|")
    for method in args.methods.split(","):
        reference = picks(dense, method, args.fraction)
        for name, variant in variants:
            shared = len(picks(variant, method, args.fraction) & reference)
            print(f"| {method} | {name} | {shared:,} of {len(reference):,} ({shared / len(reference):.1%}) |", flush=True)


if __name__ == "__main__":
    main()
