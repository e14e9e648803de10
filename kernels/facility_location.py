"""Greedy facility location on the GPU, all classes at once, in Triton.

Costs K (smaller = more similar), start levels b and gains are defined as in
:mod:`coreaug_fast.selection`: with u_i = min(b, min_{j∈S} K_ij) the gain of e is
Σ_i max(0, u_i − K_ie). Every gain has one summation order whatever rows it is computed
with (element-wise terms, then a fixed pairwise tree: :func:`_gains`), so
a computed gain only shrinks as u shrinks and a stale gain is a true upper bound; the
exact lazy greedy therefore returns the naive greedy's sequence, ties to the lowest row.

Kernels (the launcher :func:`facility_location` runs them with no host synchronisation
between greedy steps):

* ``_refresh_kernel``: exact gains of every unchosen row of every class at the current u
  (one program per 16 candidates; uses the whole GPU). Run before the first pick and
  again after it, when every bound is stale at once.
* ``_greedy_kernel``: one persistent program per class runs its greedy steps. Per step:
  the row e0 with the largest bound is re-evaluated alone; every row whose bound could
  still beat (or tie lower) its fresh gain is compacted into a list and re-evaluated
  16 at a time, pruning against the running best; the winner is recorded, and u and the
  assignment are updated from the winner's cost row alone. Naive mode re-evaluates every
  unchosen row instead.

Costs come from the stored per-class matrices of :func:`class_cost_matrices`, or, when
they would not fit in memory, are recomputed on the fly from the embeddings
(:func:`exact_cost`), n² · D work per full pass instead of n² memory. A stored matrix
(tl.dot tiles) and costs on the fly may differ in the last bit; each mode is exact in itself.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .distances import EXP, _factors, _sq_norms, class_cost_matrices, exact_cost, launch_guard, matrix_layout

NAIVE, LAZY = 0, 1
# Warps of the per-class greedy program. With one program per class, CIFAR-10 keeps 10 SMs
# busy; more warps per program hide more latency but make each block-wide reduction and
# barrier dearer. Not measured on a GPU yet: `make gpu-check` times 4, 8 and 16 (ptxas, sm_90:
# no spills at 4 or 16 warps on any variant; 8 warps spills 8 bytes on the factored one).
GREEDY_WARPS = 4
_FLOAT32_EPS = 2.0 ** -24
# columns of the per-class table (int64 (m, _CLASS_COLS)) that the kernels read
ROW0, ROWS, MAT0, NPAD, OUT0, BUDGET = (tl.constexpr(i) for i in range(6))
_CLASS_COLS = tl.constexpr(6)


@triton.jit
def _cost(COST, mat0, npad, XTA, XTH, XN, NT, r0, rx, ry, mx, my, DA, DH, inv_dim,
          SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr):
    """K[rx, ry] of one class (local rows), shaped as rx and ry broadcast (a (BC, BI) tile
    from (BC, 1) and (1, BI), or one (BI,) row from a scalar and (BI,)); masked entries
    are 0. An entry's bits do not depend on the shape it is computed in."""
    mask = mx & my
    if STORED:
        # matrices start and rows are padded at multiples of 16 floats: vector loads
        mat0 = tl.multiple_of(mat0, 16)
        npad = tl.multiple_of(npad, 16)
        k = tl.load(COST + mat0 + rx.to(tl.int64) * npad + ry, mask=mask, other=0.0)
    else:
        k = exact_cost(XTA, XTH, XN, NT, r0, rx, ry, mx, my, DA, DH, inv_dim, SIM, FACTORED)
        k = tl.where(mask, k, 0.0)
    return k


@triton.jit
def _pair_sum(x, ROWS: tl.constexpr, W: tl.constexpr):
    """Sum of x over its last axis (W entries, a power of two) by adjacent pairs, level by
    level: (ROWS, W) -> (ROWS,), or with ROWS 0, (W,) -> scalar. Each addition has exactly
    two operands, so a row sums to the same bits alone or as a lane of a tile (tl.sum's
    order follows the layout of the tensor over threads)."""
    for level in tl.static_range(1, 16):
        if (W >> level) >= 1:
            if ROWS == 0:
                a, b = tl.split(tl.reshape(x, (W >> level, 2)))
            else:
                a, b = tl.split(tl.reshape(x, (ROWS, W >> level, 2)))
            x = a + b
    if ROWS == 0:
        return tl.sum(x, axis=0)  # of one entry
    else:
        return tl.reshape(x, (ROWS,))


@triton.jit
def _gains(COST, mat0, npad, XTA, XTH, XN, NT, U, r0, n, cand, live, DA, DH, inv_dim,
           SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr,
           BC: tl.constexpr, BI: tl.constexpr):
    """Σ_i max(0, u_i − K_ie) for the BC candidates ``cand`` (local rows) where ``live``,
    (BC,); with BC 0, for the one row ``cand`` (a scalar), at 1/16 of a tile's work. Values
    for dead lanes are meaningless. The terms are added column-wise over the row chunks in
    order, then :func:`_pair_sum`: element-wise work and a fixed tree, so a row alone gets
    the bits it gets as a lane of a tile."""
    if BC == 0:
        rows = cand
        rows_live = live
        acc = tl.zeros((BI,), dtype=tl.float32)
    else:
        rows = cand[:, None]
        rows_live = live[:, None]
        acc = tl.zeros((BC, BI), dtype=tl.float32)
    for i0 in range(0, n, BI):
        ii = i0 + tl.arange(0, BI)
        mi = ii < n
        u = tl.load(U + r0 + ii, mask=mi, other=0.0)
        k = _cost(COST, mat0, npad, XTA, XTH, XN, NT, r0, rows, ii, rows_live, mi, DA, DH, inv_dim,
                  SIM, STORED, FACTORED)
        acc += tl.maximum(u - k, 0.0)  # padding: u = 0 = K, a zero term
    return _pair_sum(acc, BC, BI)


@triton.jit
def _class_row(CLASS, c):
    """(r0, n, mat0, npad, out0, budget) of class c from the per-class table; int32 but for
    the matrix offset and row stride, which index the (possibly > 2**31) cost buffer."""
    row = CLASS + c * _CLASS_COLS
    return (tl.load(row + ROW0).to(tl.int32), tl.load(row + ROWS).to(tl.int32), tl.load(row + MAT0),
            tl.load(row + NPAD), tl.load(row + OUT0).to(tl.int32), tl.load(row + BUDGET).to(tl.int32))


@triton.jit
def _refresh_kernel(COST, XTA, XTH, XN, NT, U, UB, CLASS, TILE_CLASS, TILE_START, DA, DH, inv_dim,
                    slack_per_chunk, SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr,
                    BC: tl.constexpr, BI: tl.constexpr):
    tile = tl.program_id(0)
    c = tl.load(TILE_CLASS + tile)
    r0, n, mat0, npad, _, _ = _class_row(CLASS, c)
    cand = tl.load(TILE_START + tile) + tl.arange(0, BC)
    ub = tl.load(UB + r0 + cand, mask=cand < n, other=float("-inf"))
    live = (cand < n) & (ub != float("-inf"))  # -inf marks chosen rows
    g = _gains(COST, mat0, npad, XTA, XTH, XN, NT, U, r0, n, cand, live, DA, DH, inv_dim,
               SIM, STORED, FACTORED, BC, BI)
    # The greedy kernel sums the same terms in the same order, but may be compiled with
    # another layout: a relative slack of a few rounding errors per chunk keeps the stored
    # value an upper bound of its gains whatever the compiler does.
    chunks = (n + BI - 1) // BI
    tl.store(UB + r0 + cand, g * (1.0 + slack_per_chunk * (chunks + 16)), mask=live)


# T0/T1 change between launches (0..1, then 1..k): not specialised, so one compile serves both
@triton.jit(do_not_specialize=["T0", "T1"])
def _greedy_kernel(COST, XTA, XTH, XN, NT, U, UB, CAND, CLASS, OUT_ROWS, OUT_GAINS, ASSIGN, T0, T1,
                   DA, DH, inv_dim, SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr,
                   OPT: tl.constexpr, BC: tl.constexpr, BI: tl.constexpr, BS: tl.constexpr):
    c = tl.program_id(0)
    r0, n, mat0, npad, o0, k = _class_row(CLASS, c)
    lanes = tl.arange(0, BC)
    big = 2147483647
    for t in range(T0, tl.minimum(T1, k)):
        # Global scratch written by other threads of this program in the last step.
        tl.debug_barrier()
        best_g = -1.0
        best_e = 0
        if OPT == 0:  # naive: every unchosen row, every step
            for c0 in range(0, n, BC):
                cand = c0 + lanes
                ub = tl.load(UB + r0 + cand, mask=cand < n, other=float("-inf"))
                live = (cand < n) & (ub != float("-inf"))
                g = _gains(COST, mat0, npad, XTA, XTH, XN, NT, U, r0, n, cand, live, DA, DH, inv_dim,
                           SIM, STORED, FACTORED, BC, BI)
                gm = tl.where(live, g, -1.0)
                tm = tl.max(gm, axis=0)
                ti = tl.min(tl.where(gm == tm, cand, big), axis=0)
                take = tm > best_g  # chunks come in row order: ties keep the lower row
                best_e = tl.where(take, ti, best_e)
                best_g = tl.maximum(tm, best_g)
        else:
            # the largest bound (lowest row on ties)
            top = float("-inf")
            e0 = 0
            for j0 in range(0, n, BS):
                jj = j0 + tl.arange(0, BS)
                v = tl.load(UB + r0 + jj, mask=jj < n, other=float("-inf"))
                cm = tl.max(v, axis=0)
                ci = tl.min(tl.where(v == cm, jj, big), axis=0)
                e0 = tl.where(cm > top, ci, e0)
                top = tl.maximum(cm, top)
            # e0 alone: usually the only row evaluated in a step
            g0 = _gains(COST, mat0, npad, XTA, XTH, XN, NT, U, r0, n, e0, e0 >= 0, DA, DH, inv_dim,
                        SIM, STORED, FACTORED, 0, BI)
            best_g = g0
            best_e = e0
            # every row whose bound could beat e0 (or tie it from a lower row)
            count = 0
            for j0 in range(0, n, BS):
                jj = j0 + tl.arange(0, BS)
                v = tl.load(UB + r0 + jj, mask=jj < n, other=float("-inf"))
                keep = (jj < n) & (jj != e0) & ((v > g0) | ((v == g0) & (jj < e0)))
                kept = keep.to(tl.int32)
                pos = count + tl.cumsum(kept, axis=0) - 1
                tl.store(CAND + r0 + pos, jj, mask=keep)
                count += tl.sum(kept, axis=0)
            tl.debug_barrier()
            for c0 in range(0, count, BC):
                slot = c0 + lanes
                ms = slot < count
                cand = tl.load(CAND + r0 + slot, mask=ms, other=0)
                ub = tl.load(UB + r0 + cand, mask=ms, other=float("-inf"))
                live = ms & ((ub > best_g) | ((ub == best_g) & (cand < best_e)))
                if tl.sum(live.to(tl.int32), axis=0) > 0:
                    g = _gains(COST, mat0, npad, XTA, XTH, XN, NT, U, r0, n, cand, live, DA, DH, inv_dim,
                               SIM, STORED, FACTORED, BC, BI)
                    tl.store(UB + r0 + cand, g, mask=live)
                    gm = tl.where(live, g, -1.0)
                    tm = tl.max(gm, axis=0)
                    ti = tl.min(tl.where(gm == tm, cand, big), axis=0)
                    take = (tm > best_g) | ((tm == best_g) & (ti < best_e))
                    best_e = tl.where(take, ti, best_e)
                    best_g = tl.where(take, tm, best_g)
            tl.store(UB + r0 + e0, g0, mask=e0 != best_e)
        tl.store(OUT_ROWS + o0 + t, (r0 + best_e).to(tl.int64))
        tl.store(OUT_GAINS + o0 + t, best_g)
        # other threads stored the winner's fresh gain above; -inf must land after it
        tl.debug_barrier()
        tl.store(UB + r0 + best_e, float("-inf"))
        # u_i = min(u_i, K_{e,i}); rows strictly closer to e (all rows at the first pick) move to it
        for i0 in range(0, n, BI):
            ii = i0 + tl.arange(0, BI)
            mi = ii < n
            krow = _cost(COST, mat0, npad, XTA, XTH, XN, NT, r0, best_e, ii, best_e >= 0, mi,
                         DA, DH, inv_dim, SIM, STORED, FACTORED)
            u = tl.load(U + r0 + ii, mask=mi, other=0.0)
            closer = (krow < u) | (t == 0)
            tl.store(ASSIGN + r0 + ii, (o0 + t).to(tl.int64), mask=mi & closer)
            tl.store(U + r0 + ii, tl.minimum(u, krow), mask=mi)


def _greedy_block_sizes(device: torch.device, stored: bool):
    """(BC, BI, BS): candidates per gain evaluation, cost rows per chunk, bounds per scan.
    On the GPU, costs computed on the fly hold four multiply-add chains per tile entry, hence
    narrower row chunks. Small blocks keep the interpreter quick."""
    if device.type != "cuda":
        return 16, 32, 64
    return (16, 256, 1024) if stored else (16, 64, 1024)


def matrix_budget(device: torch.device, max_matrix_bytes: int) -> int:
    """Bytes the stored cost matrices may take: ``max_matrix_bytes``, or on a GPU less when
    60% of what is free (to the driver, plus PyTorch's cached free blocks) is smaller."""
    if device.type != "cuda":
        return max_matrix_bytes
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return min(max_matrix_bytes, int((free + cached) * 0.6))


def facility_location(x, h, offsets: torch.Tensor, budgets: torch.Tensor, total: int, *,
                      similarity: str = "distance", optimizer: str = "lazy",
                      max_matrix_bytes: int = 2 << 30, stored=None):
    """Greedy facility location for every class, on the device of ``x``.

    Args:
        x: (N, D) float32 rows grouped by class (plain rows centred per class), or the
            grad factor (N, C) when ``h`` (N, d) is given (factored rows).
        offsets: (m + 1,) int64 CPU tensor of class starts; budgets: (m,) int64 CPU picks
            per class (<= class size), summing to ``total``.
        similarity: "distance", "sqdistance" or "exp"; optimizer: "naive" or "lazy".
        max_matrix_bytes: the most the stored per-class cost matrices may take; above it
            (or above 60% of the GPU's free memory, if smaller) costs are recomputed on the fly.
        stored: force stored matrices (True) or on-the-fly costs (False); default: by size.

    Returns:
        ``(rows, gains, assignment)`` as torch.ops.coreaug.facility_location: rows (total,)
        int64 into x in greedy order per class, gains (total,) float32, assignment (N,) int64
        output position of each row's representative (-1 for classes with no picks).
    """
    if optimizer not in ("naive", "lazy"):
        raise ValueError(f"the Triton selector runs optimizer 'naive' or 'lazy', got {optimizer!r}")
    sim = ("distance", "sqdistance", "exp").index(similarity)
    emb = x if h is None else (x, h)
    xa, xh = _factors(emb)
    device = xa.device
    n_total = xa.shape[0]
    counts = offsets[1:] - offsets[:-1]
    m = counts.numel()
    with launch_guard(device):
        rows = torch.empty(total, dtype=torch.long, device=device)
        gains = torch.empty(total, dtype=torch.float32, device=device)
        assign = torch.full((n_total,), -1, dtype=torch.long, device=device)
        if total == 0:
            return rows, gains, assign
        npad, mat_off = matrix_layout(counts)  # on the host, as class_cost_matrices lays them out
        if stored is None:
            stored = int(mat_off[-1]) * 4 <= matrix_budget(device, max_matrix_bytes)
        costs, _, _, cmax = class_cost_matrices(emb, offsets, sim, store=stored)
        factored = xh is not None
        dim = xa.shape[1] * (xh.shape[1] if factored else 1)
        xn = _sq_norms(xa, xh)
        class_of_row = torch.repeat_interleave(torch.arange(m, device=device), counts.to(device),
                                               output_size=int(counts.sum()))
        level = torch.zeros(m, device=device) if sim == EXP else cmax
        u = level[class_of_row].contiguous()
        ub = torch.zeros(n_total, dtype=torch.float32, device=device)
        cand = torch.empty(n_total, dtype=torch.int32, device=device)
        out_off = torch.zeros(m, dtype=torch.long)
        torch.cumsum(budgets[:-1], 0, out=out_off[1:])
        # one row per class, columns ROW0..BUDGET (built on the host, one copy)
        table = torch.stack([offsets[:-1], counts, mat_off[:-1], npad, out_off, budgets.long()], 1)
        table = table.contiguous().to(device)
        bc, bi, bs = _greedy_block_sizes(device, stored)
        common = dict(DA=xa.shape[1], DH=xh.shape[1] if factored else 0, inv_dim=1.0 / max(dim, 1),
                      SIM=sim, STORED=stored, FACTORED=factored, BC=bc, BI=bi)
        if stored:
            data = (costs, xn, xn, xn, n_total, u, ub)  # the embeddings are not read again
        else:
            # transposed, so that a column of a cost tile is one coalesced load
            xta = xa.t().contiguous()
            data = (xn, xta, xh.t().contiguous() if factored else xta, xn, n_total, u, ub)
        k_max = int(budgets.max())

        def greedy_steps(t0, t1, opt):
            _greedy_kernel[(m,)](*data, cand, table, rows, gains, assign, t0, t1, OPT=opt, BS=bs,
                                 num_warps=GREEDY_WARPS, **common)

        if optimizer == "lazy":
            # candidate tiles of 16 rows, for every class with picks
            tiles = torch.where(budgets > 0, (counts + bc - 1) // bc, 0)
            tiles_class = torch.repeat_interleave(torch.arange(m, dtype=torch.int32), tiles)
            first_tile = torch.cumsum(tiles, 0) - tiles
            tiles_start = ((torch.arange(int(tiles.sum())) - first_tile.repeat_interleave(tiles)) * bc).int()
            tiles_class, tiles_start = tiles_class.to(device), tiles_start.to(device)

            def refresh():
                _refresh_kernel[(tiles_class.numel(),)](*data, table, tiles_class, tiles_start,
                                                        slack_per_chunk=4 * _FLOAT32_EPS * math.log2(2 * bi),
                                                        **common)

            # Before the first pick and after it every bound is stale: refresh them all across
            # the whole GPU, then let one program per class run the remaining steps.
            refresh()
            greedy_steps(0, 1, LAZY)
            if k_max > 1:
                refresh()
                greedy_steps(1, k_max, LAZY)
        else:
            greedy_steps(0, k_max, NAIVE)
    return rows, gains, assign
