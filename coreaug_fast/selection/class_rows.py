"""The rows one call of a selection backend compares: a run of whole classes, taken from
the embeddings (or computed from the logits of :class:`~coreaug_fast.LazyEmbeddings`) as
float32, centred per class (plain rows) and scaled per class by a power of two.

The selector takes classes a run at a time (:func:`coreaug_fast.selection.engine.select_local`), so
only one run's rows exist at once besides the caller's tensors. Every step is per row or
per class, so a class gets the same bits in any run, and the same as when all rows were
prepared together. :func:`prepared` is the entry: on CPU tensors one compiled op,
``class_rows_``, does every step class by class into a buffer reused from run to run; on
CUDA tensors (and sources the op does not take) the torch composite :func:`take`,
:func:`centred`, :func:`unit_scaled` runs, which the op matches bit for bit.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import _ext
from .embeddings import LazyEmbeddings


def prepared(x, h: Optional[torch.Tensor], rows: torch.Tensor, counts: torch.Tensor, similarity: str,
             work: dict):
    """``(xs, hs, gain_unit)``: the rows ``rows`` of ``x`` (and of the features ``h``) as
    :func:`take` and :func:`prepare` make them (``counts`` (m,) int64 CPU: the run's rows
    per class). On CPU tensors they are written into buffers kept in ``work`` (a dict the
    caller passes to every run): valid until the next call with the same ``work``."""
    lazy = isinstance(x, LazyEmbeddings)
    source = x.logits if lazy else x
    if not (source.device.type == "cpu" and _ext.available() and _unit_columns(source)
            and (h is None or _unit_columns(h))):
        xs, hs = take(x, h, rows)
        return prepare(xs, hs, counts, similarity)
    scale = _scales(similarity, rows.numel(), source.shape[1], h)
    xs = _buffer(work, "x", rows.numel(), source.shape[1])
    sx = torch.ops.coreaug.class_rows_(xs, source, x.targets if lazy else None, rows, counts, h is None, scale)
    hs = None
    if h is not None:
        hs = _buffer(work, "h", rows.numel(), h.shape[1])
        sh = torch.ops.coreaug.class_rows_(hs, h, None, rows, counts, False, scale)
    if not scale:
        return xs, hs, None
    return xs, hs, _gain_unit(sx, None if h is None else sh, similarity)


def _unit_columns(t: torch.Tensor) -> bool:
    return t.shape[1] <= 1 or t.stride(1) == 1


def _buffer(work: dict, key: str, rows: int, width: int) -> torch.Tensor:
    """(rows, width) float32 from ``work[key]``, grown when too small: one allocation (and
    one round of page faults) for all runs rather than one per run."""
    need = rows * width
    flat = work.get(key)
    if flat is None or flat.numel() < need:
        work.pop(key, None)  # freed before its successor is allocated
        flat = work[key] = torch.empty(need, dtype=torch.float32)
    return flat[:need].view(rows, width)


def _scales(similarity: str, rows: int, width: int, h: Optional[torch.Tensor]) -> bool:
    """Whether the rows are scaled per class: "exp" costs are not scale invariant, and empty
    rows have nothing to scale."""
    return not (similarity == "exp" or rows == 0 or width == 0 or (h is not None and h.shape[1] == 0))


def _gain_unit(sx: torch.Tensor, sh: Optional[torch.Tensor], similarity: str) -> torch.Tensor:
    unit = sx.double() if sh is None else sx.double() * sh.double()
    return 1.0 / unit if similarity == "distance" else 1.0 / unit ** 2


def take(x, h: Optional[torch.Tensor], rows: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Float32 contiguous copies of rows ``rows`` (int64, on the rows' device) of ``x``
    (a floating (n, D) tensor, or a :class:`LazyEmbeddings`, whose grad rows are computed
    here) and of the features ``h`` (n, d) or None. With a lazy ``x``, ``h`` is its features.
    The copies are new tensors (an index gathers), so they may be changed in place."""
    xs = x.grad_rows(rows) if isinstance(x, LazyEmbeddings) else x[rows].float().contiguous()
    return xs, None if h is None else h[rows].float().contiguous()


def centred(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows minus their class mean. Any per-class offset leaves the distances unchanged;
    the mean makes the norms small, so the expansion ‖x‖² + ‖y‖² − 2x·y cancels far less.
    segment_reduce is deterministic (index_add_ on CUDA is not), so the result is too."""
    counts = (offsets[1:] - offsets[:-1]).to(x.device)
    if x.shape[0] == 0:
        return x
    means = torch.segment_reduce(x, "mean", lengths=counts, axis=0)
    return x - torch.repeat_interleave(means, counts, dim=0)


def unit_scaled(t: torch.Tensor, counts: torch.Tensor):
    """``(t, scale)``: the rows of ``t`` (n, D) float32, grouped by class, multiplied in place
    by their class's power of two 2^-e that brings its largest |entry| into [0.5, 1) (1 for an
    all-zero class), and those (m,) float32 factors. ``counts``: (m,) rows per class on the
    device of ``t``. Multiplying by a power of two is exact, so distances and gains scale
    exactly; without it, float32 squared norms of rows of size 1e-20 underflow to 0 and every
    row looks like a duplicate of every other."""
    row_max = torch.maximum(t.amax(1), -t.amin(1))
    _, exponent = torch.frexp(torch.segment_reduce(row_max, "max", lengths=counts))
    scale = torch.ldexp(torch.ones(counts.numel(), device=t.device), (-exponent).clamp(-126, 126))
    t.mul_(torch.repeat_interleave(scale, counts, output_size=t.shape[0])[:, None])
    return t, scale


def prepare(xs: torch.Tensor, hs: Optional[torch.Tensor], counts: torch.Tensor, similarity: str):
    """``(xs, hs, gain_unit)`` for rows taken by :func:`take` (``counts`` (m,) int64 CPU rows
    per class): plain rows centred per class; the rows of each class scaled by
    :func:`unit_scaled` (x and h each by its own); and the (m,) float64 factor that turns the
    gains computed on them back into gains of the given rows, or None when the rows are not
    scaled (``"exp"``, whose costs are not scale invariant; empty rows). ``xs`` and ``hs``
    may be changed in place."""
    if hs is None and xs.shape[0]:
        offsets = torch.zeros(counts.numel() + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=offsets[1:])
        xs = centred(xs, offsets)
    if not _scales(similarity, xs.shape[0], xs.shape[1], hs):
        return xs, hs, None
    dev_counts = counts.to(xs.device)
    xs, sx = unit_scaled(xs, dev_counts)
    sh = None
    if hs is not None:
        hs, sh = unit_scaled(hs, dev_counts)
    return xs, hs, _gain_unit(sx, sh, similarity)


if _ext.available():

    @torch.library.register_fake("coreaug::class_rows_")
    def _(out, source, targets, rows, counts, centre, scale):
        torch._check(out.dim() == 2 and source.dim() == 2, lambda: "out and source must be 2-D")
        torch._check(out.shape[0] == rows.shape[0], lambda: "out must have one row per entry of rows")
        return out.new_empty((counts.shape[0],))
