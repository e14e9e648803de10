"""Pairwise Euclidean distances between gradient embeddings, blocked, in Triton.

Plain rows x_i ∈ R^D use ‖x_i‖² + ‖y_j‖² − 2 x_i·y_j; factored rows a_i ⊗ h_i use
‖a_i‖²‖h_i‖² + ‖a_j‖²‖h_j‖² − 2 (a_i·a_j)(h_i·h_j), so the (n, C·d) outer products are
never formed. Dots are IEEE float32 (no TF32): the greedy compares gains that differ in
late digits. Callers centre plain rows first (distances are translation invariant, and
centring shrinks the norms whose difference the expansion cancels).

Two launchers: :func:`pairwise_sq_distances` (one x against one y) and
:func:`class_cost_matrices` (every class's own n_c × n_c cost matrix, all classes in one
launch, for the coreset selector). Both use :func:`sq_dist_tile` (tl.dot tiles). The greedy
kernels (kernels/facility_location.py) compute costs on the fly with :func:`exact_cost`, the same
costs from element-by-element multiply-adds, which a single row gets bit for bit.
"""
from __future__ import annotations

from typing import Optional

import contextlib

import torch
import triton
import triton.language as tl

from ..vocabulary import SIMILARITIES, code

# Similarity codes, as every backend takes them: the name's position in
# coreaug_fast.vocabulary.SIMILARITIES (module-level constexprs, so kernels can read them;
# ``.value`` is the int on the host). Shared with kernels/facility_location.py.
DISTANCE = tl.constexpr(code(SIMILARITIES, "distance"))
SQDISTANCE = tl.constexpr(code(SIMILARITIES, "sqdistance"))
EXP = tl.constexpr(code(SIMILARITIES, "exp"))
# Squared distances below DUP_TOL · (‖x_i‖² + ‖x_j‖²) are below float32's resolution of the
# expansion and count as 0 (as in the CPU op and the reference): duplicates stay duplicates.
# A module-level constexpr, so the kernels read this one value.
DUP_TOL = tl.constexpr(2.0 ** -18)


# Warps of _class_cost_kernel. Measured with ptxas -v on an ahead-of-time sm_90 compile
# (Triton 3.8, 64×64 tiles, BLOCK_D 32): at 4 warps the factored kernel needs 255 registers
# and spills (128 B stack, inside the D loops); at 8 warps it uses 218 (plain rows 156)
# with no spills, at the same occupancy (one 8-warp block or two 4-warp blocks per SM).
CLASS_COST_WARPS = 8


def launch_guard(device: torch.device):
    """Context for a launch on ``device``: Triton launches on the *current* CUDA device,
    which need not be the tensors' (a model on cuda:1 with cuda:0 current)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@triton.jit
def _dot_tile(X, Y, rx, ry, mask_x, mask_y, D, s_x, s_y,
              BLOCK_X: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_D: tl.constexpr):
    """x_rx · y_ry for rows rx of X (row stride s_x) and ry of Y (s_y) over D columns,
    (BLOCK_X, BLOCK_Y) float32: IEEE tl.dot (no TF32) of BLOCK_D-column chunks, in order."""
    rd = tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_X, BLOCK_Y), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + rd
        x = tl.load(X + rx[:, None].to(tl.int64) * s_x + cols[None, :], mask=mask_x[:, None] & (cols[None, :] < D), other=0.0)
        y = tl.load(Y + ry[:, None].to(tl.int64) * s_y + cols[None, :], mask=mask_y[:, None] & (cols[None, :] < D), other=0.0)
        acc += tl.dot(x, tl.trans(y), input_precision="ieee")
    return acc


@triton.jit
def sq_dist_tile(XA, XH, XN, YA, YH, YN, rx, ry, mask_x, mask_y, DA, DH, s_xa, s_xh, s_ya, s_yh,
                 FACTORED: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_D: tl.constexpr,
                 DUP_FLOOR: tl.constexpr = False):
    """Squared distances between rows rx of X and ry of Y, (BLOCK_X, BLOCK_Y) float32,
    clamped at 0; with DUP_FLOOR, values below DUP_TOL · (‖x‖² + ‖y‖²) (rounding noise)
    are 0 too. Masked rows read as zeros. XN/YN hold the rows' squared norms."""
    dot_a = _dot_tile(XA, YA, rx, ry, mask_x, mask_y, DA, s_xa, s_ya, BLOCK_X, BLOCK_Y, BLOCK_D)
    if FACTORED:
        dot_a = dot_a * _dot_tile(XH, YH, rx, ry, mask_x, mask_y, DH, s_xh, s_yh, BLOCK_X, BLOCK_Y, BLOCK_D)
    xn = tl.load(XN + rx, mask=mask_x, other=0.0)
    yn = tl.load(YN + ry, mask=mask_y, other=0.0)
    return sq_from_dot(dot_a, xn[:, None] + yn[None, :], DUP_FLOOR)


@triton.jit
def sq_from_dot(dot, norms, DUP_FLOOR: tl.constexpr):
    """‖x‖² + ‖y‖² − 2 x·y from the dot and the sum of the squared norms, clamped at 0; with
    DUP_FLOOR, values below DUP_TOL · (‖x‖² + ‖y‖²) (rounding noise) are 0 too. The one
    place the noise floor is applied, for tl.dot tiles and element-wise costs alike."""
    d2 = norms - 2.0 * dot
    if DUP_FLOOR:
        return tl.where(d2 > norms * DUP_TOL, d2, 0.0)
    return tl.maximum(d2, 0.0)


@triton.jit
def cost_from_sq(d2, inv_dim, SIM: tl.constexpr):
    """Squared distances -> costs: ‖·‖ (SIM DISTANCE), ‖·‖² (SQDISTANCE), −exp(−‖·‖·inv_dim) (EXP)."""
    if SIM == SQDISTANCE:
        return d2
    elif SIM == DISTANCE:
        return tl.sqrt_rn(d2)  # correctly rounded, as the CPU op's std::sqrt (tl.sqrt is approximate)
    else:
        return -tl.exp(-tl.sqrt_rn(d2) * inv_dim)


@triton.jit
def class_cost_tile(XA, XH, XN, r0, ri, rj, mi, mj, DA, DH, inv_dim,
                    SIM: tl.constexpr, FACTORED: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr,
                    BLOCK_D: tl.constexpr):
    """Costs between local rows ri and rj of the class whose rows start at global row r0,
    (BI, BJ) float32, from the embeddings: rounding-noise distances count as 0 and the
    diagonal is exactly 0, as in the stored matrices and the CPU op. XA (N, DA) and XH
    (N, DH) are contiguous, so their row strides are DA and DH."""
    xa = XA + r0.to(tl.int64) * DA
    xh = XH + r0.to(tl.int64) * DH
    xn = XN + r0
    d2 = sq_dist_tile(xa, xh, xn, xa, xh, xn, ri, rj, mi, mj, DA, DH, DA, DH, DA, DH,
                      FACTORED, BI, BJ, BLOCK_D, DUP_FLOOR=True)
    d2 = tl.where(ri[:, None] == rj[None, :], 0.0, d2)
    return cost_from_sq(d2, inv_dim, SIM)


@triton.jit
def _fma_dot(XT, NT, r0, rx, ry, mx, my, D):
    """x_rx · x_ry from the transposed rows XT (D, NT), shaped as rx and ry broadcast: per
    entry, four chains of fused multiply-adds (columns k ≡ 0, 1, 2, 3 mod 4, in order), then
    (c0 + c1) + (c2 + c3). Four chains, not one, so that a lone row (one entry per thread)
    is not held up by the latency of one dependent chain."""
    acc0 = tl.zeros_like(rx + ry).to(tl.float32)
    acc1 = acc0
    acc2 = acc0
    acc3 = acc0
    ox = r0 + rx
    oy = r0 + ry
    col = XT  # a scalar pointer steps the columns (no D · NT index to overflow int32, and
    for k in range(0, D, 4):  # no per-entry pointers carried through the loop)
        # columns past D load zeros: fma(0, 0, c) = c
        acc0 = tl.fma(tl.load(col + ox, mask=mx, other=0.0), tl.load(col + oy, mask=my, other=0.0), acc0)
        col += NT
        m = k + 1 < D
        acc1 = tl.fma(tl.load(col + ox, mask=mx & m, other=0.0), tl.load(col + oy, mask=my & m, other=0.0), acc1)
        col += NT
        m = k + 2 < D
        acc2 = tl.fma(tl.load(col + ox, mask=mx & m, other=0.0), tl.load(col + oy, mask=my & m, other=0.0), acc2)
        col += NT
        m = k + 3 < D
        acc3 = tl.fma(tl.load(col + ox, mask=mx & m, other=0.0), tl.load(col + oy, mask=my & m, other=0.0), acc3)
        col += NT
    return (acc0 + acc1) + (acc2 + acc3)


@triton.jit
def exact_cost(XTA, XTH, XN, NT, r0, rx, ry, mx, my, DA, DH, inv_dim,
               SIM: tl.constexpr, FACTORED: tl.constexpr):
    """Costs between local rows rx and ry of the class whose rows start at global row r0,
    as class_cost_tile defines them (rounding-noise distances 0, diagonal exactly 0), shaped
    as rx and ry broadcast: (BC, 1) and (1, BI) give a tile, a scalar and (BI,) one row.

    The embeddings come transposed, XTA (DA, NT) and XTH (DH, NT), so a column of a tile is
    one coalesced load. Every operation is element by element (no tl.dot, no reduction),
    so an entry has the same bits in a tile, in a row, and in a tile of other rows: the
    greedy evaluates one row alone where a tile would waste 15 lanes, and still gets the
    gains the naive sweep computes. tl.dot's summation order follows the tile's layout."""
    dot = _fma_dot(XTA, NT, r0, rx, ry, mx, my, DA)
    if FACTORED:
        dot = dot * _fma_dot(XTH, NT, r0, rx, ry, mx, my, DH)
    norms = tl.load(XN + r0 + rx, mask=mx, other=0.0) + tl.load(XN + r0 + ry, mask=my, other=0.0)
    d2 = tl.where(rx != ry, sq_from_dot(dot, norms, True), 0.0)
    return cost_from_sq(d2, inv_dim, SIM)


@triton.jit
def _sq_distance_kernel(
    XA, XH, YA, YH, XN, YN, OUT,
    M, N, DA, DH,
    s_xa, s_xh, s_ya, s_yh, s_om,
    FACTORED: tl.constexpr, ZERO_DIAGONAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = rm < M
    mask_n = rn < N
    d2 = sq_dist_tile(XA, XH, XN, YA, YH, YN, rm, rn, mask_m, mask_n, DA, DH, s_xa, s_xh, s_ya, s_yh,
                      FACTORED, BLOCK_M, BLOCK_N, BLOCK_D)
    if ZERO_DIAGONAL:
        d2 = tl.where(rm[:, None] == rn[None, :], 0.0, d2)
    # int64: m·n reaches 2**31 at 46341² (a 50k × 50k matrix would wrap)
    tl.store(OUT + rm[:, None].to(tl.int64) * s_om + rn[None, :], d2, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _class_cost_kernel(
    XA, XH, XN, COST, CMAX,
    TILE_CLASS, TILE_I, TILE_J, ROW_OFF, MAT_OFF, NPAD,
    DA, DH, inv_dim,
    SIM: tl.constexpr, FACTORED: tl.constexpr, STORE: tl.constexpr, WANT_MAX: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One upper-triangle tile (bi <= bj) of one class; it also writes the mirror tile, so
    # every matrix is exactly symmetric.
    tile = tl.program_id(0)
    c = tl.load(TILE_CLASS + tile)
    bi = tl.load(TILE_I + tile)
    bj = tl.load(TILE_J + tile)
    r0 = tl.load(ROW_OFF + c)
    n = tl.load(ROW_OFF + c + 1) - r0
    ri = bi * BLOCK + tl.arange(0, BLOCK)
    rj = bj * BLOCK + tl.arange(0, BLOCK)
    mi = ri < n
    mj = rj < n
    k = class_cost_tile(XA, XH, XN, r0, ri, rj, mi, mj, DA, DH, inv_dim,
                        SIM, FACTORED, BLOCK, BLOCK, BLOCK_D)
    upper = ri[:, None] <= rj[None, :]
    valid = mi[:, None] & mj[None, :]
    if STORE:
        base = COST + tl.load(MAT_OFF + c)
        npad = tl.load(NPAD + c).to(tl.int64)
        tl.store(base + ri[:, None].to(tl.int64) * npad + rj[None, :], k, mask=valid & upper)
        tl.store(base + rj[None, :].to(tl.int64) * npad + ri[:, None], k, mask=valid & (ri[:, None] < rj[None, :]))
    if WANT_MAX:
        tl.atomic_max(CMAX + c, tl.max(tl.where(valid & upper, k, 0.0)))


def _factors(e):
    """(a, h) float32 contiguous; h is None for plain rows."""
    if isinstance(e, tuple):
        return e[0].float().contiguous(), e[1].float().contiguous()
    return e.float().contiguous(), None


def _sq_norms(a: torch.Tensor, h: Optional[torch.Tensor]) -> torch.Tensor:
    n = (a.double() ** 2).sum(1)
    return (n if h is None else n * (h.double() ** 2).sum(1)).float()


def _tile_sizes(device: torch.device):
    """(BLOCK, BLOCK_D): square tile side and dot chunk. Small blocks keep the interpreter quick."""
    return (64, 32) if device.type == "cuda" else (16, 16)


def pairwise_sq_distances(x, y=None, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``x`` and ``y`` (default: ``x``).

    Args:
        x: (m, D) floating tensor, or a ``(grad (m, C), features (m, d))`` pair (e.g.
            :class:`coreaug_fast.FactoredEmbeddings`) standing for the rows grad ⊗ features.
        y: like ``x`` with n rows and the same kind, or None for ``x`` itself (then the
            diagonal is exactly 0).
        out: optional (m, n) float32 contiguous tensor to write into.

    Returns:
        (m, n) float32 tensor, clamped at 0, on the device of ``x`` (a CUDA device, or a CPU
        tensor under ``TRITON_INTERPRET=1``).
    """
    xa, xh = _factors(x)
    ya, yh = (xa, xh) if y is None else _factors(y)
    if (xh is None) != (yh is None):
        raise ValueError("x and y must both be plain or both be factored")
    m, n = xa.shape[0], ya.shape[0]
    if out is None:
        out = torch.empty((m, n), dtype=torch.float32, device=xa.device)
    if m == 0 or n == 0:
        return out
    xn = _sq_norms(xa, xh)
    yn = xn if y is None else _sq_norms(ya, yh)
    factored = xh is not None
    dh = xh.shape[1] if factored else 0
    block, block_d = _tile_sizes(xa.device)
    grid = (triton.cdiv(m, block), triton.cdiv(n, block))
    _sq_distance_kernel[grid](
        xa, xh if factored else xa, ya, yh if factored else ya, xn, yn, out,
        m, n, xa.shape[1], dh,
        xa.stride(0), xh.stride(0) if factored else 0, ya.stride(0), yh.stride(0) if factored else 0,
        out.stride(0),
        FACTORED=factored, ZERO_DIAGONAL=y is None,
        BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d,
    )
    return out


def padded_rows(counts: torch.Tensor) -> torch.Tensor:
    """Row stride of each class's cost matrix: n_c rounded up to 16 (64-byte rows)."""
    return (counts + 15) // 16 * 16


def matrix_layout(counts: torch.Tensor):
    """``(npad, mat_off)`` int64 on the device of ``counts``: each class's row stride and
    the start of its matrix in the flat cost buffer; ``mat_off`` has m + 1 entries (the
    last is the buffer's size)."""
    npad = padded_rows(counts)
    mat_off = torch.zeros(counts.numel() + 1, dtype=torch.long, device=counts.device)
    torch.cumsum(counts * npad, 0, out=mat_off[1:])
    return npad, mat_off


def class_cost_matrices(x, offsets: torch.Tensor, similarity: int, *, store: bool = True):
    """Every class's n_c × n_c cost matrix, all classes in one launch.

    Args:
        x: (N, D) float32 rows grouped by class (plain rows already centred per class), or
            a (grad (N, C), features (N, d)) pair for factored rows; CUDA (or CPU under the
            interpreter).
        offsets: (m + 1,) int64 CPU tensor, class t owns rows offsets[t]:offsets[t+1].
        similarity: DISTANCE, SQDISTANCE or EXP (cost ‖·‖, ‖·‖² or −exp(−‖·‖/dim)).
        store: False computes only the per-class maxima (for costs computed on the fly).

    Returns:
        ``(costs, mat_off, npad, cmax)``: the flat float32 buffer in which class t's matrix
        starts at ``mat_off[t]`` (int64) with row stride ``npad[t]`` (int32), exactly
        symmetric with an exact diagonal (0, or −1 for EXP), squared distances below
        DUP_TOL · (‖x_i‖² + ‖x_j‖²) taken as 0; and ``cmax`` (m,) float32, the
        largest cost per class (0 for EXP). ``costs`` is None when ``store`` is False.
    """
    xa, xh = _factors(x)
    device = xa.device
    counts = offsets[1:] - offsets[:-1]
    npad, mat_off = matrix_layout(counts)
    block, block_d = _tile_sizes(device)
    nb = (counts + block - 1) // block
    # the upper-triangle tiles (bi <= bj) of every class, built once per distinct class size
    classes, tile_i, tile_j = [], [], []
    for b in torch.unique(nb).tolist():
        if b == 0:
            continue
        members = (nb == b).nonzero().squeeze(1).int()
        i, j = torch.triu_indices(b, b, dtype=torch.int32)
        classes.append(members.repeat_interleave(i.numel()))
        tile_i.append(i.repeat(members.numel()))
        tile_j.append(j.repeat(members.numel()))
    m = counts.numel()
    cmax = torch.zeros(m, dtype=torch.float32, device=device)
    costs = torch.empty(int(mat_off[-1]), dtype=torch.float32, device=device) if store else None
    if not classes:
        return costs, mat_off[:-1].to(device), npad.int().to(device), cmax
    tc, ti, tj = (torch.cat(v).to(device) for v in (classes, tile_i, tile_j))
    factored = xh is not None
    dim = xa.shape[1] * (xh.shape[1] if factored else 1)
    xn = _sq_norms(xa, xh)
    _class_cost_kernel[(tc.numel(),)](
        xa, xh if factored else xa, xn, costs if store else cmax, cmax,
        tc, ti, tj, offsets.to(device=device, dtype=torch.int32), mat_off[:-1].to(device), npad.int().to(device),
        xa.shape[1], xh.shape[1] if factored else 0, 1.0 / max(dim, 1),
        SIM=similarity, FACTORED=factored, STORE=store, WANT_MAX=similarity != EXP.value,
        BLOCK=block, BLOCK_D=block_d, num_warps=CLASS_COST_WARPS,
    )
    return costs, mat_off[:-1].to(device), npad.int().to(device), cmax
