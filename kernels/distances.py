"""Pairwise Euclidean distances between gradient embeddings, blocked, in Triton.

Plain rows x_i ∈ R^D use ‖x_i‖² + ‖y_j‖² − 2 x_i·y_j; factored rows a_i ⊗ h_i use
‖a_i‖²‖h_i‖² + ‖a_j‖²‖h_j‖² − 2 (a_i·a_j)(h_i·h_j), so the (n, C·d) outer products are
never formed. Dots are IEEE float32 (no TF32): the greedy compares gains that differ in
late digits. Callers centre plain rows first (distances are translation invariant, and
centring shrinks the norms whose difference the expansion cancels).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl


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
    rd = tl.arange(0, BLOCK_D)
    mask_m = rm < M
    mask_n = rn < N

    dot_a = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, DA, BLOCK_D):
        cols = d0 + rd
        x = tl.load(XA + rm[:, None] * s_xa + cols[None, :], mask=mask_m[:, None] & (cols[None, :] < DA), other=0.0)
        y = tl.load(YA + rn[:, None] * s_ya + cols[None, :], mask=mask_n[:, None] & (cols[None, :] < DA), other=0.0)
        dot_a += tl.dot(x, tl.trans(y), input_precision="ieee")
    if FACTORED:
        dot_h = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, DH, BLOCK_D):
            cols = d0 + rd
            x = tl.load(XH + rm[:, None] * s_xh + cols[None, :], mask=mask_m[:, None] & (cols[None, :] < DH), other=0.0)
            y = tl.load(YH + rn[:, None] * s_yh + cols[None, :], mask=mask_n[:, None] & (cols[None, :] < DH), other=0.0)
            dot_h += tl.dot(x, tl.trans(y), input_precision="ieee")
        dot_a = dot_a * dot_h

    xn = tl.load(XN + rm, mask=mask_m, other=0.0)
    yn = tl.load(YN + rn, mask=mask_n, other=0.0)
    d2 = tl.maximum(xn[:, None] + yn[None, :] - 2.0 * dot_a, 0.0)
    if ZERO_DIAGONAL:
        d2 = tl.where(rm[:, None] == rn[None, :], 0.0, d2)
    tl.store(OUT + rm[:, None] * s_om + rn[None, :], d2, mask=mask_m[:, None] & mask_n[None, :])


def _factors(e):
    """(a, h) float32 contiguous; h is None for plain rows."""
    if isinstance(e, tuple):
        return e[0].float().contiguous(), e[1].float().contiguous()
    return e.float().contiguous(), None


def _sq_norms(a: torch.Tensor, h: Optional[torch.Tensor]) -> torch.Tensor:
    n = (a * a).sum(1)
    return n if h is None else n * (h * h).sum(1)


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
    block = 64 if xa.is_cuda else 16  # small blocks keep the interpreter quick
    block_d = 32 if xa.is_cuda else 16
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
