"""Greedy facility location on the GPU, all classes at once, in Triton: the GPU body of the
``facility_location`` op (its CPU body is ``csrc/facility_location_cpu.cpp``, its entry
:func:`coreaug_fast.select_coreset`, its twin ``coreaug_fast.reference.facility_location``).

Costs K (smaller = more similar), start levels b and gains are defined as in
:mod:`coreaug_fast.selection.facility_location`: with u_i = min(b, min_{j∈S} K_ij) the gain
of e is Σ_i max(0, u_i − K_ie). Every gain has one summation order whatever rows it is
computed with (element-wise terms, then a fixed pairwise tree: :func:`_gains`), so a
computed gain only shrinks as u shrinks and a stale gain is a true upper bound; the exact
lazy greedy therefore returns the naive greedy's sequence, ties to the lowest row.

Kernels (the launcher :func:`facility_location` runs them with no host synchronisation
between greedy steps):

* ``_refresh_kernel``: exact gains of every unchosen row of every class at the current u
  (one program per BC candidates; uses the whole GPU). Run before the first pick and
  again after it, when every bound is stale at once.
* ``_lazy_greedy_kernel``: one persistent program per class runs its greedy steps. Per
  step (:func:`_lazy_pick`): 1. the row e0 with the largest bound is re-evaluated alone;
  2. every row whose bound could still beat (or tie lower) its fresh gain is compacted
  into a list; 3. those are re-evaluated BC at a time, pruning against the running best;
  then (:func:`_take`) the winner is recorded, and u and the assignment are updated from
  the winner's cost row alone.
* ``_naive_greedy_kernel``: the same program, but each step (:func:`_naive_pick`)
  re-evaluates every unchosen row.

Costs come from the stored per-class matrices of :func:`class_cost_matrices`, or, when
they would not fit in memory, are recomputed on the fly from the embeddings
(:func:`exact_cost`), n² · D work per full pass instead of n² memory. A stored matrix
(tl.dot tiles) and costs on the fly may differ in the last bit; each mode is exact in itself.

Kernel parameters (a name means the same in every kernel and helper of this file):

=================  ==========================================================================
``COST``           float32 flat buffer of every class's stored cost matrix (class c's starts
                   at ``mat0`` with row stride ``npad``: :func:`matrix_layout`); read only
                   when ``STORED`` (else any float32 tensor, unread)
``XTA``, ``XTH``   float32 (DA, NT) and (DH, NT): the grad factor (plain rows: the rows) and
                   the features, transposed so a column of a cost tile is one coalesced
                   load; read only when not ``STORED`` (XTH only when ``FACTORED``)
``XN``             float32 (NT,): each row's squared norm (‖a‖²·‖h‖² for factored rows)
``NT``             int: rows of all classes together (the row stride of XTA and XTH)
``U``              float32 (NT,): each row's level u_i = min(b, min_{j∈S} K_ij), lowered at
                   every pick; starts at the class's b
``UB``             float32 (NT,): each row's gain bound: an upper bound of its gain, exact
                   where last evaluated; -inf marks a chosen row
``CAND``           int32 (NT,): scratch, each class's compacted list of rows to re-evaluate
``CLASS``          int64 (m, 6): one row per class, columns ROW0..BUDGET (:func:`_class_row`)
``OUT_ROWS``       int64 (total,): the picks, rows of x in greedy order per class
``OUT_GAINS``      float32 (total,): the gain of each pick
``ASSIGN``         int64 (NT,): each row's representative, as an output position
``T0``, ``T1``     the steps [T0, min(T1, k_c)) one launch runs
``DA``, ``DH``     widths of the grad factor and of the features (DH 0 for plain rows)
``inv_dim``        1 / (DA·DH, or DA): the "exp" similarity's 1/dim
``TILE_CLASS``     int32: per refresh program, its class
``TILE_START``     int32: per refresh program, its first candidate (a local row)
``slack_per_chunk`` relative slack per row chunk that keeps refreshed gains upper bounds
``r0, n``          (helpers) the class's first global row and its row count
``mat0, npad``     (helpers) start and row stride of the class's stored matrix
``SIM``            constexpr similarity code: DISTANCE, SQDISTANCE or EXP
``STORED``         constexpr: costs read from COST, else computed from XTA/XTH/XN
``FACTORED``       constexpr: the rows are grad ⊗ features
``BC``             constexpr: candidates evaluated together (a tile's rows), or ONE_ROW
``BI``             constexpr: cost-row entries per chunk (a tile's columns)
``BS``             constexpr: bounds read per block of the lazy scans
=================  ==========================================================================
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..vocabulary import SIMILARITIES, code
from .distances import EXP, _factors, _sq_norms, class_cost_matrices, exact_cost, launch_guard, matrix_layout

# Warps of the per-class greedy program. With one program per class, CIFAR-10 keeps 10 SMs
# busy; more warps per program hide more latency but make each block-wide reduction and
# barrier dearer. Not measured on a GPU yet: `make gpu-check` times 4, 8 and 16 (ptxas, sm_90:
# no spills at 4 or 16 warps on any variant; 8 warps spills 8 bytes on the factored one).
GREEDY_WARPS = 4
_FLOAT32_EPS = 2.0 ** -24
# columns of the per-class table (int64 (m, _CLASS_COLS)) that the kernels read
COL_ROW0, COL_ROWS, COL_MAT0, COL_NPAD, COL_OUT0, COL_BUDGET = (tl.constexpr(i) for i in range(6))
_CLASS_COLS = tl.constexpr(6)
# BC (and _pair_sum's ROWS) of a single row: a scalar candidate and (BI,) chunks, not a tile.
ONE_ROW = tl.constexpr(0)
# UB of a chosen row (and the bound of a masked lane): below every gain, which is >= 0.
CHOSEN = tl.constexpr(float("-inf"))
# A row index above every row: ties in an argmax go to the lowest row, min over this.
NO_ROW = tl.constexpr(2147483647)
# The gain of a masked lane and the best before any: below every gain (>= 0), above CHOSEN.
NO_GAIN = tl.constexpr(-1.0)


@triton.jit
def _cost(COST, mat0, npad, XTA, XTH, XN, NT, r0, rx, ry, mx, my, DA, DH, inv_dim,
          SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr):
    """K[rx, ry] of one class (local rows; masks mx, my), shaped as rx and ry broadcast (a
    (BC, BI) tile from (BC, 1) and (1, BI), or one (BI,) row from a scalar and (BI,));
    masked entries are 0. An entry's bits do not depend on the shape it is computed in."""
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
def _pair_sum(x, BC: tl.constexpr, BI: tl.constexpr):
    """Sum of x over its last axis (BI entries, a power of two) by adjacent pairs, level by
    level: (BC, BI) -> (BC,), or with BC ONE_ROW, (BI,) -> scalar. Each addition has exactly
    two operands, so a row sums to the same bits alone or as a lane of a tile (tl.sum's
    order follows the layout of the tensor over threads)."""
    for level in tl.static_range(1, 16):
        if (BI >> level) >= 1:
            if BC == ONE_ROW:
                a, b = tl.split(tl.reshape(x, (BI >> level, 2)))
            else:
                a, b = tl.split(tl.reshape(x, (BC, BI >> level, 2)))
            x = a + b
    if BC == ONE_ROW:
        return tl.sum(x, axis=0)  # of one entry
    else:
        return tl.reshape(x, (BC,))


@triton.jit
def _gains(COST, mat0, npad, XTA, XTH, XN, NT, U, r0, n, cand, live, DA, DH, inv_dim,
           SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr,
           BC: tl.constexpr, BI: tl.constexpr):
    """Σ_i max(0, u_i − K_ie) for the BC candidates ``cand`` (local rows) where ``live``,
    (BC,); with BC ONE_ROW, for the one row ``cand`` (a scalar), at 1/16 of a tile's work.
    Values for dead lanes are meaningless. The terms are added column-wise over the row
    chunks in order, then :func:`_pair_sum`: element-wise work and a fixed tree, so a row
    alone gets the bits it gets as a lane of a tile."""
    if BC == ONE_ROW:
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
    return (tl.load(row + COL_ROW0).to(tl.int32), tl.load(row + COL_ROWS).to(tl.int32), tl.load(row + COL_MAT0),
            tl.load(row + COL_NPAD), tl.load(row + COL_OUT0).to(tl.int32), tl.load(row + COL_BUDGET).to(tl.int32))


@triton.jit
def _refresh_kernel(COST, XTA, XTH, XN, NT, U, UB, CLASS, TILE_CLASS, TILE_START, DA, DH, inv_dim,
                    slack_per_chunk, SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr,
                    BC: tl.constexpr, BI: tl.constexpr):
    """UB of BC unchosen rows of one class, set to their exact gains at the current U (with
    slack); one program per (class, BC rows) tile, so the whole GPU works at once."""
    tile = tl.program_id(0)
    c = tl.load(TILE_CLASS + tile)
    r0, n, mat0, npad, _, _ = _class_row(CLASS, c)
    cand = tl.load(TILE_START + tile) + tl.arange(0, BC)
    ub = tl.load(UB + r0 + cand, mask=cand < n, other=CHOSEN)
    live = (cand < n) & (ub != CHOSEN)
    g = _gains(COST, mat0, npad, XTA, XTH, XN, NT, U, r0, n, cand, live, DA, DH, inv_dim,
               SIM, STORED, FACTORED, BC, BI)
    # The greedy kernel sums the same terms in the same order, but may be compiled with
    # another layout: a relative slack of a few rounding errors per chunk keeps the stored
    # value an upper bound of its gains whatever the compiler does.
    chunks = (n + BI - 1) // BI
    tl.store(UB + r0 + cand, g * (1.0 + slack_per_chunk * (chunks + 16)), mask=live)


@triton.jit
def _naive_pick(COST, mat0, npad, XTA, XTH, XN, NT, U, UB, r0, n, DA, DH, inv_dim,
                SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr,
                BC: tl.constexpr, BI: tl.constexpr):
    """(row, gain) of the step's pick: every unchosen row's exact gain, BC rows at a time in
    row order; the largest gain wins, the lowest row on ties."""
    lanes = tl.arange(0, BC)
    best_g = tl.full((), NO_GAIN, tl.float32)  # loop-carried: a value, not the constexpr
    best_e = 0
    for c0 in range(0, n, BC):
        cand = c0 + lanes
        ub = tl.load(UB + r0 + cand, mask=cand < n, other=CHOSEN)
        live = (cand < n) & (ub != CHOSEN)
        g = _gains(COST, mat0, npad, XTA, XTH, XN, NT, U, r0, n, cand, live, DA, DH, inv_dim,
                   SIM, STORED, FACTORED, BC, BI)
        gm = tl.where(live, g, NO_GAIN)
        tm = tl.max(gm, axis=0)
        ti = tl.min(tl.where(gm == tm, cand, NO_ROW), axis=0)
        take = tm > best_g  # chunks come in row order: ties keep the lower row
        best_e = tl.where(take, ti, best_e)
        best_g = tl.maximum(tm, best_g)
    return best_e, best_g


@triton.jit
def _top_bound(UB, r0, n, BS: tl.constexpr):
    """The row with the largest bound (the lowest row on ties), scanning BS bounds at a time."""
    top = tl.full((), CHOSEN, tl.float32)  # below every bound; loop-carried: a value, not the constexpr
    e0 = 0
    for j0 in range(0, n, BS):
        jj = j0 + tl.arange(0, BS)
        v = tl.load(UB + r0 + jj, mask=jj < n, other=CHOSEN)
        cm = tl.max(v, axis=0)
        ci = tl.min(tl.where(v == cm, jj, NO_ROW), axis=0)
        e0 = tl.where(cm > top, ci, e0)
        top = tl.maximum(cm, top)
    return e0


@triton.jit
def _compact_rivals(UB, CAND, r0, n, e0, g0, BS: tl.constexpr):
    """Writes to CAND[r0:] every row other than e0 whose bound could beat e0's fresh gain
    g0 (or tie it from a lower row), in row order; returns how many."""
    count = 0
    for j0 in range(0, n, BS):
        jj = j0 + tl.arange(0, BS)
        v = tl.load(UB + r0 + jj, mask=jj < n, other=CHOSEN)
        keep = (jj < n) & (jj != e0) & ((v > g0) | ((v == g0) & (jj < e0)))
        kept = keep.to(tl.int32)
        pos = count + tl.cumsum(kept, axis=0) - 1
        tl.store(CAND + r0 + pos, jj, mask=keep)
        count += tl.sum(kept, axis=0)
    return count


@triton.jit
def _lazy_pick(COST, mat0, npad, XTA, XTH, XN, NT, U, UB, CAND, r0, n, DA, DH, inv_dim,
               SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr,
               BC: tl.constexpr, BI: tl.constexpr, BS: tl.constexpr):
    """(row, gain) of the step's pick, evaluating only rows whose stale bound could still win;
    the gains it computes become those rows' bounds."""
    # 1. the largest bound, evaluated alone: usually the only row evaluated in a step
    e0 = _top_bound(UB, r0, n, BS)
    g0 = _gains(COST, mat0, npad, XTA, XTH, XN, NT, U, r0, n, e0, e0 >= 0, DA, DH, inv_dim,
                SIM, STORED, FACTORED, ONE_ROW, BI)
    best_g = g0
    best_e = e0
    # 2. every row whose bound could beat e0 (or tie it from a lower row)
    count = _compact_rivals(UB, CAND, r0, n, e0, g0, BS)
    tl.debug_barrier()
    # 3. those rows BC at a time, each tile's live lanes only those that can still win
    lanes = tl.arange(0, BC)
    for c0 in range(0, count, BC):
        slot = c0 + lanes
        ms = slot < count
        cand = tl.load(CAND + r0 + slot, mask=ms, other=0)
        ub = tl.load(UB + r0 + cand, mask=ms, other=CHOSEN)
        live = ms & ((ub > best_g) | ((ub == best_g) & (cand < best_e)))
        if tl.sum(live.to(tl.int32), axis=0) > 0:
            g = _gains(COST, mat0, npad, XTA, XTH, XN, NT, U, r0, n, cand, live, DA, DH, inv_dim,
                       SIM, STORED, FACTORED, BC, BI)
            tl.store(UB + r0 + cand, g, mask=live)
            gm = tl.where(live, g, NO_GAIN)
            tm = tl.max(gm, axis=0)
            ti = tl.min(tl.where(gm == tm, cand, NO_ROW), axis=0)
            take = (tm > best_g) | ((tm == best_g) & (ti < best_e))
            best_e = tl.where(take, ti, best_e)
            best_g = tl.where(take, tm, best_g)
    tl.store(UB + r0 + e0, g0, mask=e0 != best_e)
    return best_e, best_g


@triton.jit
def _take(COST, mat0, npad, XTA, XTH, XN, NT, U, UB, OUT_ROWS, OUT_GAINS, ASSIGN, r0, n, o0, t, best_e, best_g,
          DA, DH, inv_dim, SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr, BI: tl.constexpr):
    """Records step t's pick (best_e, best_g) of the class whose picks start at output o0,
    marks it chosen, and lowers the levels from its cost row alone."""
    tl.store(OUT_ROWS + o0 + t, (r0 + best_e).to(tl.int64))
    tl.store(OUT_GAINS + o0 + t, best_g)
    # other threads stored the winner's fresh gain above; CHOSEN must land after it
    tl.debug_barrier()
    tl.store(UB + r0 + best_e, CHOSEN)
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


# T0/T1 change between launches (0..1, then 1..k): not specialised, so one compile serves both
@triton.jit(do_not_specialize=["T0", "T1"])
def _lazy_greedy_kernel(COST, XTA, XTH, XN, NT, U, UB, CAND, CLASS, OUT_ROWS, OUT_GAINS, ASSIGN, T0, T1,
                        DA, DH, inv_dim, SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr,
                        BC: tl.constexpr, BI: tl.constexpr, BS: tl.constexpr):
    """Steps [T0, T1) of the lazy greedy of class program_id(0), bounds in UB up to date."""
    c = tl.program_id(0)
    r0, n, mat0, npad, o0, k = _class_row(CLASS, c)
    for t in range(T0, tl.minimum(T1, k)):
        # Global scratch written by other threads of this program in the last step.
        tl.debug_barrier()
        best_e, best_g = _lazy_pick(COST, mat0, npad, XTA, XTH, XN, NT, U, UB, CAND, r0, n, DA, DH, inv_dim,
                                    SIM, STORED, FACTORED, BC, BI, BS)
        _take(COST, mat0, npad, XTA, XTH, XN, NT, U, UB, OUT_ROWS, OUT_GAINS, ASSIGN, r0, n, o0, t, best_e, best_g,
              DA, DH, inv_dim, SIM, STORED, FACTORED, BI)


@triton.jit(do_not_specialize=["T0", "T1"])
def _naive_greedy_kernel(COST, XTA, XTH, XN, NT, U, UB, CLASS, OUT_ROWS, OUT_GAINS, ASSIGN, T0, T1,
                         DA, DH, inv_dim, SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr,
                         BC: tl.constexpr, BI: tl.constexpr):
    """Steps [T0, T1) of the naive greedy of class program_id(0): every gain, every step."""
    c = tl.program_id(0)
    r0, n, mat0, npad, o0, k = _class_row(CLASS, c)
    for t in range(T0, tl.minimum(T1, k)):
        tl.debug_barrier()
        best_e, best_g = _naive_pick(COST, mat0, npad, XTA, XTH, XN, NT, U, UB, r0, n, DA, DH, inv_dim,
                                     SIM, STORED, FACTORED, BC, BI)
        _take(COST, mat0, npad, XTA, XTH, XN, NT, U, UB, OUT_ROWS, OUT_GAINS, ASSIGN, r0, n, o0, t, best_e, best_g,
              DA, DH, inv_dim, SIM, STORED, FACTORED, BI)


#: The optimizers (names of :data:`coreaug_fast.vocabulary.OPTIMIZERS`) the Triton selector
#: runs; stochastic greedy runs in the CPU op.
OPTIMIZERS = ("naive", "lazy")


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


def _class_table(offsets, counts, mat_off, npad, budgets, device) -> torch.Tensor:
    """The per-class table the kernels read (int64 (m, 6), columns COL_ROW0..COL_BUDGET),
    built on the host and copied once."""
    out_off = torch.zeros(counts.numel(), dtype=torch.long)
    torch.cumsum(budgets[:-1], 0, out=out_off[1:])
    table = torch.stack([offsets[:-1], counts, mat_off[:-1], npad, out_off, budgets.long()], 1)
    return table.contiguous().to(device)


def _refresh_tiles(counts, budgets, bc: int, device):
    """(class, first row) int32 of every BC-row tile of every class with picks: the programs
    of :func:`_refresh_kernel`."""
    tiles = torch.where(budgets > 0, (counts + bc - 1) // bc, 0)
    tiles_class = torch.repeat_interleave(torch.arange(counts.numel(), dtype=torch.int32), tiles)
    first_tile = torch.cumsum(tiles, 0) - tiles
    tiles_start = ((torch.arange(int(tiles.sum())) - first_tile.repeat_interleave(tiles)) * bc).int()
    return tiles_class.to(device), tiles_start.to(device)


def _cost_sources(xa, xh, costs, stored: bool) -> dict:
    """The kernels' COST, XTA, XTH, XN, NT arguments. Stored costs: the matrices, with XN
    standing in for the embeddings, which are not read again; otherwise the embeddings
    transposed (XN standing in for COST)."""
    xn = _sq_norms(xa, xh)
    if stored:
        return dict(COST=costs, XTA=xn, XTH=xn, XN=xn, NT=xa.shape[0])
    xta = xa.t().contiguous()
    xth = xh.t().contiguous() if xh is not None else xta
    return dict(COST=xn, XTA=xta, XTH=xth, XN=xn, NT=xa.shape[0])


def facility_location(x, h, offsets: torch.Tensor, budgets: torch.Tensor, total: int, *,
                      similarity: str = "distance", optimizer: str = "lazy",
                      max_matrix_bytes: int = 2 << 30, stored=None):
    """Greedy facility location for every class, on the device of ``x``.

    Args:
        x: (N, D) float32 rows grouped by class (plain rows centred per class), or the
            grad factor (N, C) when ``h`` (N, d) is given (factored rows).
        offsets: (m + 1,) int64 CPU tensor of class starts; budgets: (m,) int64 CPU picks
            per class (<= class size), summing to ``total``.
        similarity: a name of :data:`coreaug_fast.vocabulary.SIMILARITIES` ("distance",
            "sqdistance" or "exp"); optimizer: one of :data:`OPTIMIZERS` ("naive" or "lazy").
        max_matrix_bytes: the most the stored per-class cost matrices may take; above it
            (or above 60% of the GPU's free memory, if smaller) costs are recomputed on the fly.
        stored: force stored matrices (True) or on-the-fly costs (False); default: by size.

    Returns:
        ``(rows, gains, assignment)`` as torch.ops.coreaug.facility_location: rows (total,)
        int64 into x in greedy order per class, gains (total,) float32, assignment (N,) int64
        output position of each row's representative (-1 for classes with no picks).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"the Triton selector runs optimizer 'naive' or 'lazy', got {optimizer!r}")
    sim = code(SIMILARITIES, similarity)
    emb = x if h is None else (x, h)
    xa, xh = _factors(emb)
    device = xa.device
    counts = offsets[1:] - offsets[:-1]
    with launch_guard(device):
        rows = torch.empty(total, dtype=torch.long, device=device)
        gains = torch.empty(total, dtype=torch.float32, device=device)
        assign = torch.full((xa.shape[0],), -1, dtype=torch.long, device=device)
        if total == 0:
            return rows, gains, assign
        npad, mat_off = matrix_layout(counts)  # on the host, as class_cost_matrices lays them out
        if stored is None:
            stored = int(mat_off[-1]) * 4 <= matrix_budget(device, max_matrix_bytes)
        costs, _, _, cmax = class_cost_matrices(emb, offsets, sim, store=stored)
        # every row starts at its class's level b
        class_of_row = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts.to(device),
                                               output_size=int(counts.sum()))
        level = torch.zeros(counts.numel(), device=device) if sim == EXP.value else cmax
        bc, bi, bs = _greedy_block_sizes(device, stored)
        dim = xa.shape[1] * (xh.shape[1] if xh is not None else 1)
        state = dict(_cost_sources(xa, xh, costs, stored), U=level[class_of_row].contiguous(),
                     UB=torch.zeros(xa.shape[0], dtype=torch.float32, device=device),
                     DA=xa.shape[1], DH=xh.shape[1] if xh is not None else 0, inv_dim=1.0 / max(dim, 1),
                     SIM=sim, STORED=stored, FACTORED=xh is not None, BC=bc, BI=bi)
        greedy = dict(CLASS=_class_table(offsets, counts, mat_off, npad, budgets, device), OUT_ROWS=rows,
                      OUT_GAINS=gains, ASSIGN=assign)
        if optimizer == "lazy":
            _run_lazy(state, greedy, _refresh_tiles(counts, budgets, bc, device), int(budgets.max()), bs)
        else:
            _naive_greedy_kernel[(counts.numel(),)](**state, **greedy, T0=0, T1=int(budgets.max()),
                                                    num_warps=GREEDY_WARPS)
    return rows, gains, assign


def _run_lazy(state: dict, greedy: dict, tiles, k_max: int, bs: int) -> None:
    """The lazy greedy's launches. Before the first pick and after it every bound is stale:
    refresh them all across the whole GPU, then let one program per class run the remaining
    steps."""
    tiles_class, tiles_start = tiles
    classes = greedy["CLASS"].shape[0]
    cand = torch.empty(state["UB"].shape[0], dtype=torch.int32, device=state["UB"].device)
    slack = 4 * _FLOAT32_EPS * math.log2(2 * state["BI"])

    def refresh():
        _refresh_kernel[(tiles_class.numel(),)](**state, CLASS=greedy["CLASS"], TILE_CLASS=tiles_class,
                                                TILE_START=tiles_start, slack_per_chunk=slack)

    def steps(t0, t1):
        _lazy_greedy_kernel[(classes,)](**state, **greedy, CAND=cand, T0=t0, T1=t1, BS=bs, num_warps=GREEDY_WARPS)

    refresh()
    steps(0, 1)
    if k_max > 1:
        refresh()
        steps(1, k_max)
