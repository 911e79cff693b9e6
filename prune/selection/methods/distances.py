"""Pairwise distances shared by the methods: float32, blocked, posterior samples summed in place.

Every function takes per-sample features of one pool with a posterior axis, shape (p, M, d),
and returns the float32 (p, p) *expected* distance over the M samples, (1/M) sum_m d_m(i, j)
(seed 000 eq. 6) -- never the distance of averaged features. The diagonal is exactly 0.

The result is the only p x p matrix alive: it is filled a block of rows at a time (about
``BLOCK_ENTRIES`` numbers, so a block stays in cache), and every posterior sample's term is
added into the block while it is there. Euclidean distances come from Gram products,
sqrt(|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>), in float32; against float64 this changes picks only at
near-ties (tests/test_methods.py::test_float32_distances_pick_as_float64). ``dtype=float64``
computes the same in float64 (and returns float64).

Passes over a block (issue 29; each value is the one the plain formula gives, op for op): the
block is filled in place in the result (no copy out), the factor -2 rides on one Gram operand
(scaling by a power of 2 is exact, barring subnormal numbers), the first sample's square root is
written straight into the block, and the mean over the samples is taken block by block while
the block is in cache rather than over the whole matrix afterwards.
"""

from __future__ import annotations

import torch

from prune.selection.engine import in_threads

BLOCK_ENTRIES = 1 << 18  # entries of one block of rows (1 MiB in float32)


def _block_rows(p: int) -> int:
    return max(1, min(p, BLOCK_ENTRIES // max(p, 1)))


def _row_blocks(p: int):
    rows = _block_rows(p)
    for start in range(0, p, rows):
        yield start, min(start + rows, p)


def peak_bytes(p: int, scratch: int) -> int:
    """Bytes the float32 distances of a pool of p hold at their peak: the (p, p) result (which the
    greedy then runs on) and, per CPU worker, a block of rows and its ``scratch`` buffers (1 for
    ``expected_euclidean``, 3 for ``expected_last_layer``). (Blocks are now filled in place in the
    result, so the block counted here is an allowance of at most 1 MiB per worker.)"""
    rows = _block_rows(p)
    workers = min(torch.get_num_threads(), -(-p // rows)) if p else 0
    return 4 * (p * p + workers * (1 + scratch) * rows * p)


def _add_sqrt(block: torch.Tensor, gram: torch.Tensor, sq_rows: torch.Tensor, sq_cols: torch.Tensor,
              first: bool) -> None:
    """block += sqrt(max(sq_i + sq_j + gram_ij, 0)) (``gram`` holds -2 <x_i, x_j>), overwriting ``gram``;
    ``first``: block = that (0 + x is x)."""
    gram.add_(sq_cols).add_(sq_rows[:, None]).clamp_min_(0)
    if first:
        torch.sqrt(gram, out=block)
    else:
        block.add_(gram.sqrt_())


def _blocked(p: int, samples: int, dtype: torch.dtype, device: torch.device, scratch: int, fill,
             upper: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """The symmetric (p, p) result, built from its upper triangle a block of rows at a time.

    ``fill(block, start, stop, *buffers)`` writes into ``block`` (the result's rows start..stop-1
    and columns start..p-1, in place) the sum over the samples; the block is divided by
    ``samples`` and mirrored below the diagonal (the result is exactly symmetric), unless
    ``upper``: then only the entries on and above the diagonal are written, the others left as
    allocated (a reader of the upper triangle, ``prune.selection.matching.herd``, saves the
    mirror's strided copy). On the CPU the blocks are shared out to one Python thread per torch
    thread, each running torch on one thread: the ops are small, and one intra-op pool would end
    each in a barrier that stalls whenever another job holds a core (see
    ``prune.selection.engine._cpu_threads``). ``out``: a buffer of at least p^2 entries of ``dtype``
    on ``device`` to hold the result (its first p^2 entries), instead of a new tensor.
    """
    if out is None:
        out = torch.empty(p, p, dtype=dtype, device=device)
    else:
        out = out.view(-1)[: p * p].view(p, p)
    rows = _block_rows(p)
    blocks = list(_row_blocks(p))
    workers = min(torch.get_num_threads(), len(blocks)) if device.type == "cpu" else 1

    def work(worker: int) -> None:
        buffers = [torch.empty(rows * p, dtype=dtype, device=device) for _ in range(scratch)]
        for start, stop in blocks[worker::workers]:
            shape = (stop - start, p - start)
            block = out[start:stop, start:]
            fill(block, start, stop, *(b[: shape[0] * shape[1]].view(shape) for b in buffers))
            block.div_(samples)
            square = block[:, : stop - start]
            square.copy_(square.triu() + square.triu(1).T)  # exactly symmetric on the diagonal too
            if not upper:
                out[stop:, start:stop] = block[:, stop - start:].T

    in_threads(work, workers)
    out.fill_diagonal_(0)
    return out


def expected_euclidean(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(p, M, d) -> (p, p): mean over posterior samples of the Euclidean distance ||x_i - x_j||."""
    p, samples = x.shape[:2]
    xs = x.to(dtype).transpose(0, 1).contiguous()  # (M, p, d)
    sq = (xs * xs).sum(-1)  # (M, p)
    xs_2 = xs * -2

    def fill(block, start, stop, gram):
        for m in range(samples):
            torch.mm(xs_2[m, start:stop], xs[m, start:].T, out=gram)  # -2 <x_i, x_j>
            _add_sqrt(block, gram, sq[m, start:stop], sq[m, start:], m == 0)

    return _blocked(p, samples, dtype, x.device, 1, fill)


def expected_last_layer(g: torch.Tensor, h: torch.Tensor, lam: torch.Tensor, weight: float,
                        dtype: torch.dtype = torch.float32, upper: bool = False,
                        out: torch.Tensor | None = None) -> torch.Tensor:
    """(p, M, C), (p, M, e), (p, M, K) -> (p, p): mean over m of ||G_i - G_j|| + weight |lam_i - lam_j|_1.

    ``upper``: only the entries on and above the diagonal are written; ``out``: a buffer to write
    the result into (``_blocked``; a caller with many pools saves a fresh matrix's page faults).

    G = g (x) [h; 1] is never materialised: <G_i, G_j> = <g_i, g_j> <h~_i, h~_j>, so two small
    Gram products replace a C(e+1)-wide one (methods.md, "Never materialise G"). The L1 term sums
    |lam_ik - lam_jk| one coordinate at a time into the cached block (no (p, p, K) array); over
    the M samples it is one L1 distance over all M K columns.
    """
    p, samples = g.shape[:2]
    gs = g.to(dtype).transpose(0, 1).contiguous()  # (M, p, C)
    ones = torch.ones(*h.shape[:2], 1, dtype=dtype, device=h.device)
    hs = torch.cat([h.to(dtype), ones], -1).transpose(0, 1).contiguous()  # (M, p, e + 1)
    sq = (gs * gs).sum(-1) * (hs * hs).sum(-1)  # |G_i|^2, (M, p)
    gs_2 = gs * -2
    lam = lam.to(dtype).reshape(p, -1)  # (p, M K)
    lam_t = lam.T.contiguous()

    def fill(block, start, stop, gram, other, acc):
        for m in range(samples):
            torch.mm(gs_2[m, start:stop], gs[m, start:].T, out=gram)  # -2 <g_i, g_j>
            torch.mm(hs[m, start:stop], hs[m, start:].T, out=other)
            _add_sqrt(block, gram.mul_(other), sq[m, start:stop], sq[m, start:], m == 0)
        if not len(lam_t):  # no curvature term (herding)
            return
        acc.zero_()
        for k in range(lam_t.shape[0]):
            acc.add_(torch.sub(lam[start:stop, k, None], lam_t[k, start:], out=other).abs_())
        block.add_(acc, alpha=weight)

    return _blocked(p, samples, dtype, g.device, 3, fill, upper, out)
