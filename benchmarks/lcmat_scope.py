"""LCMat's top-K scope on a feature store: how much of K lies in other classes' rows.

LCMat matches the curvature lambda = a (x) [h; 1]^2 of the last layer on K of its C (e + 1)
coordinates, those of largest variance (``prune.selection.methods.lcmat.top_variance_coordinates``).
A coordinate (c, j) belongs to row c of [W, b], the logit of class c. Selection runs within one
class pool (label y) at a time; this script reports, for each class y, the share of the K
coordinates used in y's pool whose row c is *not* y, for

* ``--top-k-scope all`` (prune's default): one K chosen over every example of the store;
* ``--top-k-scope class`` (the authors' code): K chosen over class y's examples only;

and how many coordinates the two choices share. Nothing is selected and no model is run; the cost
is a few (C x (e + 1)) Gram products over the store's rows.

    python benchmarks/lcmat_scope.py STORE.h5 [--top-k 100]
"""

from __future__ import annotations

import argparse

import torch

from prune.features.store import FeatureStore
from prune.selection.methods.lcmat import top_variance_coordinates


def scope_report(store: FeatureStore, top_k: int) -> list[dict]:
    """One row per class: K's share in other classes' rows under scope all and class, and the overlap."""
    width = store.embedding.shape[-1] + 1
    k = min(top_k, store.num_classes * width)
    everywhere = top_variance_coordinates(store.hess_logit, store.embedding, k)
    rows = []
    for y in range(store.num_classes):
        members = torch.nonzero(store.labels == y).flatten()
        if len(members) == 0:
            continue
        own = top_variance_coordinates(store.hess_logit[members], store.embedding[members], k)
        rows.append({
            "class": y,
            "examples": len(members),
            "other_rows_all": float((everywhere // width != y).double().mean()),
            "other_rows_class": float((own // width != y).double().mean()),
            "shared": len(set(everywhere.tolist()) & set(own.tolist())),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="a feature store written by `prune features`")
    parser.add_argument("--top-k", type=int, default=100, help="K, as lcmat's --top-k (default 100)")
    args = parser.parse_args()
    store = FeatureStore.open(args.store)
    rows = scope_report(store, args.top_k)
    print(f"{args.store}: n={store.num_examples}, C={store.num_classes}, M={store.posterior_samples}, "
          f"K={min(args.top_k, store.num_classes * (store.embedding.shape[-1] + 1))}")
    print("share of K in other classes' rows (within each class pool)")
    print(f"{'class':>5} {'examples':>8} {'scope all':>10} {'scope class':>12} {'shared':>7}")
    for r in rows:
        print(f"{r['class']:>5} {r['examples']:>8} {r['other_rows_all']:>10.1%} {r['other_rows_class']:>12.1%} "
              f"{r['shared']:>7}")
    if rows:
        mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
        print(f"{'mean':>5} {'':>8} {mean('other_rows_all'):>10.1%} {mean('other_rows_class'):>12.1%} "
              f"{mean('shared'):>7.1f}")


if __name__ == "__main__":
    main()
