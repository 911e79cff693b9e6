"""Build a "tracks" data set: imbalanced classes made of short tracks of near-duplicate frames.

Video-derived training sets look like this: each object is seen in a few dozen consecutive frames
that differ by a pixel of motion and some sensor noise, and some classes have ten times as many
objects as others. A selection method that does not see which examples are copies of one another
spends its budget on one track's frames and covers fewer objects than a random subset.

From an image folder with ``train/<class>/`` and ``test/<class>/`` (the CIFAR-10 JPEG folders, for
example), this writes an npz for ``prune ... --dataset npz:OUT``:

* train: per class, ``objects`` distinct images for the largest class, down to a tenth of that for
  the smallest (geometric in between, classes in a seeded order); each image becomes a track of
  ``frames`` frames (uniform in the given range): a random walk of one-pixel shifts (edges
  replicated, at most ``max_shift`` from the original), a brightness factor within 5 %, and
  Gaussian noise of 2/255. ``track_train`` holds each frame's track id.
* test: the folder's test images, unchanged (accuracy on the natural, balanced distribution).

    python examples/make_tracks.py ~/data/cifar10 ~/data/tracks.npz
    python examples/make_tracks.py --coverage manifests/tracks-herding-0.1.json ~/data/tracks.npz

``--coverage`` prints how many distinct tracks a manifest's subset holds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from torchvision.datasets import ImageFolder


def _pixels(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 images and (N,) labels of an ImageFolder, in its (sorted) order."""
    images = ImageFolder(str(folder))
    x = np.stack([np.asarray(images.loader(path).convert("RGB")) for path, _ in images.samples])
    return x, np.asarray(images.targets, dtype=np.int64)


def _track(image: np.ndarray, frames: int, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """``frames`` near-duplicates of one (H, W, 3) uint8 image: shifted, re-lit and noisy copies."""
    pad = np.pad(image.astype(np.float32), ((max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    shift = np.zeros(2, dtype=np.int64)
    out = np.empty((frames, *image.shape), dtype=np.uint8)
    for f in range(frames):
        shift = np.clip(shift + rng.integers(-1, 2, size=2), -max_shift, max_shift)  # one pixel of motion
        dy, dx = shift + max_shift
        frame = pad[dy:dy + h, dx:dx + w] * rng.uniform(0.95, 1.05) + rng.normal(0.0, 2.0, image.shape)
        out[f] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return out


def build(root: Path, out: Path, *, objects: int, frames: tuple[int, int], max_shift: int, seed: int) -> dict:
    """Write the tracks npz of ``root`` to ``out``; return its summary (objects and frames per class)."""
    rng = np.random.default_rng(seed)
    x, y = _pixels(root / "train")
    classes = int(y.max()) + 1
    rank = rng.permutation(classes)  # class rank[c] gets objects * 10^(-rank/(C-1)): 10x between extremes
    per_class = np.maximum(1, np.rint(objects * 10.0 ** (-rank / max(classes - 1, 1)))).astype(int)
    xs, ys, tracks = [], [], []
    for c in range(classes):
        for i in rng.choice(np.flatnonzero(y == c), size=per_class[c], replace=False):
            frames_here = int(rng.integers(frames[0], frames[1] + 1))
            xs.append(_track(x[i], frames_here, max_shift, rng))
            ys.append(np.full(frames_here, c))
            tracks.append(np.full(frames_here, len(tracks)))
    x_test, y_test = _pixels(root / "test")
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez(tmp, x_train=np.concatenate(xs), y_train=np.concatenate(ys), track_train=np.concatenate(tracks),
             x_test=x_test, y_test=y_test)
    tmp.replace(out)
    counts = np.bincount(np.concatenate(ys), minlength=classes)
    return {"objects_per_class": per_class.tolist(), "frames_per_class": counts.tolist(),
            "objects": int(per_class.sum()), "frames": int(counts.sum())}


def coverage(manifest: Path, data: Path) -> tuple[int, int]:
    """(distinct tracks in the manifest's subset, tracks in the data set)."""
    track = np.load(data)["track_train"]
    indices = np.asarray(json.loads(manifest.read_text())["indices"])
    return len(np.unique(track[indices])), len(np.unique(track))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, nargs="?", help="image folder with train/ and test/")
    parser.add_argument("out", type=Path, help="the npz to write (or, with --coverage, to read)")
    parser.add_argument("--objects", type=int, default=300, help="distinct images of the largest class")
    parser.add_argument("--frames", type=int, nargs=2, default=(20, 40), help="frames per track: low high")
    parser.add_argument("--max-shift", type=int, default=3, help="largest shift from the original, in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coverage", type=Path, metavar="MANIFEST", help="print the tracks a manifest covers")
    args = parser.parse_args()
    if args.coverage:
        covered, total = coverage(args.coverage, args.out)
        print(f"{covered} of {total} tracks covered")
    elif args.root is None:
        parser.error("give the image folder (with train/ and test/) and the npz to write")
    else:
        summary = build(args.root.expanduser(), args.out.expanduser(), objects=args.objects,
                        frames=tuple(args.frames), max_shift=args.max_shift, seed=args.seed)
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
