"""The single-process selection engine behind :func:`coreaug_fast.select_coreset`.

:mod:`~coreaug_fast.selection.facility_location` (the public entry) and
:mod:`~coreaug_fast.selection.distributed` (the sharded path) both call this module: argument checks (:func:`check_arguments`), the
grouping of rows by class and the picks per class (:class:`ClassGroups`, with the one
fraction → k rule :func:`picks_for_fraction`), and :func:`select_local`, which runs a
backend on rows grouped by class, a run of whole classes at a time (:data:`CHUNK_BYTES`),
so that besides the caller's tensors only one run's rows exist at once. Nothing here
imports :mod:`~coreaug_fast.selection.facility_location` or
:mod:`~coreaug_fast.selection.distributed`, so imports run one way: facility_location →
distributed → engine → class_rows.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings
from fractions import Fraction
from typing import NamedTuple, Optional

import torch

from .. import checks, _ext
from ..coreset import Coreset
from ..vocabulary import BACKENDS, OPTIMIZERS, SIMILARITIES, code
from . import class_rows
from .embeddings import LazyEmbeddings


_DEFAULT_MATRIX_BYTES = 2 << 30


def _matrix_bytes_from_env() -> int:
    """``COREAUG_MAX_MATRIX_BYTES`` as an int >= 0; anything else warns and keeps the
    default, so a typo in the environment cannot break ``import coreaug_fast``."""
    text = os.environ.get("COREAUG_MAX_MATRIX_BYTES")
    if text is None:
        return _DEFAULT_MATRIX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        warnings.warn(f"COREAUG_MAX_MATRIX_BYTES={text!r} is not an integer >= 0; "
                      f"using the default {_DEFAULT_MATRIX_BYTES}", RuntimeWarning, stacklevel=2)
        return _DEFAULT_MATRIX_BYTES
    return value


#: Largest per-class cost matrix (bytes) the CPU path stores; larger classes compute cost
#: rows on demand (much slower, but memory stays O(n·D)). Override with the environment
#: variable ``COREAUG_MAX_MATRIX_BYTES`` (read at import; an invalid value warns and keeps
#: the default).
MAX_MATRIX_BYTES = _matrix_bytes_from_env()

#: Estimated work (cost-matrix multiply-adds) above which ``progress=None`` shows a bar.
PROGRESS_WORK = 2e11

#: Largest run of classes (bytes of float32 rows, x and features) prepared and handed to
#: the backend at once; a class larger than this is a run of its own. On a GPU the run may
#: also be as large as the cost matrices allowed there (see :func:`run_bytes`), so that one
#: launch still covers many classes. Results do not depend on it.
CHUNK_BYTES = 256 << 20

# Squared distances are formed in float32 as ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j (up to 4 R², R the
# largest row norm) and a class's gains sum up to n_c of them: both must stay finite.
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


# ------------------------------------------------------------------ picks per class

def picks_for_fraction(fraction, n: int) -> int:
    """Picks for a class of ``n`` rows at ``fraction``: ``min(n, ceil(q · n))`` computed
    exactly, where q is the rational number the fraction is written as: its shortest
    decimal form (``str``), so 0.07 means 7/100 and 7% of 100 rows is 7 rows, not the 8
    that ``math.ceil(0.07 * 100)`` (= ceil(7.000000000000001)) gives. NumPy scalars are read
    the same way (``np.float32(0.07)`` is 7/100 too); a :class:`fractions.Fraction` is used
    as is. The one rule of every selector, the distributed one and the reference twin.
    """
    if isinstance(fraction, Fraction):
        q = fraction
    else:
        try:
            q = Fraction(str(fraction))
        except ValueError:  # a Real whose str is no decimal: its exact binary value
            q = Fraction(float(fraction))
    num = q.numerator * n
    return min(n, -(-num // q.denominator))


def _budget_int(budget) -> Optional[int]:
    """``budget`` as one int for every class (ints, NumPy integers, 0-d integer tensors),
    or None for a per-class sequence."""
    if isinstance(budget, bool):
        raise ValueError(f"budget must be an int or a per-class sequence of ints, got {budget!r}")
    if isinstance(budget, numbers.Integral) or (isinstance(budget, torch.Tensor) and budget.dim() == 0
                                                and not budget.is_floating_point()):
        value = checks.check_int("budget", budget)
        if value < 0:
            raise ValueError(f"budget must be >= 0, got {value}")
        return value
    return None


def check_budget(budget, labels: torch.Tensor):
    """An int >= 0 (capped at 2**62: no class is larger) or a (classes,) int64 CPU tensor."""
    one = _budget_int(budget)
    if one is not None:
        return min(one, 1 << 62)
    try:
        b = torch.as_tensor(budget)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise ValueError(f"budget must be an int or a per-class sequence of ints, got {type(budget).__name__}") from None
    if b.dim() != 1 or b.is_floating_point() or b.is_complex() or b.dtype == torch.bool:
        raise ValueError(f"budget must be an int or a 1-D sequence of ints, got {b.dtype} of shape {tuple(b.shape)}")
    if b.numel() and int(b.min()) < 0:
        raise ValueError(f"budget has value {int(b.min())}, expected >= 0")
    needed = int(labels.max()) + 1 if labels.numel() else 0
    if b.numel() < needed:
        raise ValueError(f"budget has {b.numel()} entries but labels has class {needed - 1}")
    return b


def class_budgets(counts, fraction, budget) -> list:
    """Picks per class (a list of ints) for classes of ``counts`` rows, class id = position
    in ``counts`` when ``budget`` is per class."""
    if budget is None:
        return [picks_for_fraction(fraction, n) for n in counts]
    if isinstance(budget, int):
        return [min(n, budget) for n in counts]
    per_class = budget.cpu().long().tolist()
    return [min(n, per_class[c]) for c, n in enumerate(counts)]


class ClassGroups:
    """Rows grouped by class: ``perm`` sorts rows by class (stably, so rows keep their
    order inside a class), ``offsets`` (m + 1,) int64 CPU are class starts in that order,
    ``budgets`` (m,) int64 CPU the picks per class, ``total`` their sum."""

    def __init__(self, labels: torch.Tensor, fraction, budget):
        self.classes, counts = torch.unique(labels, sorted=True, return_counts=True)
        self.perm = torch.sort(labels, stable=True).indices
        self.counts = counts.cpu()
        self.offsets = torch.zeros(counts.numel() + 1, dtype=torch.long)
        torch.cumsum(self.counts, 0, out=self.offsets[1:])
        if budget is None or isinstance(budget, int):
            k = torch.tensor(class_budgets(self.counts.tolist(), fraction, budget), dtype=torch.long)
        else:
            per_class = torch.as_tensor(budget).cpu().long()
            k = torch.minimum(self.counts, per_class[self.classes.cpu()])
        self.budgets = k
        self.total = int(k.sum())

    @property
    def largest(self) -> int:
        return int(self.counts.max()) if self.counts.numel() else 0


# ------------------------------------------------------------------ argument checks

def check_labels(labels, n: Optional[int]) -> torch.Tensor:
    checks.check_tensor("labels", labels, dim=1, integer=True)
    if n is not None:
        checks.check_rows(n, labels=labels)
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels has value {int(labels.min())}, expected class ids >= 0")
    return labels


def check_embeddings(embeddings):
    """(x, features or None), shapes and dtypes checked. For :class:`LazyEmbeddings`, x is
    the lazy object itself (it has ``shape`` and ``device``) and the features its own."""
    if isinstance(embeddings, LazyEmbeddings):
        lg, t, h = embeddings.logits, embeddings.targets, embeddings.features
        checks.check_tensor("embeddings.logits", lg, dim=2, floating=True)
        checks.check_tensor("embeddings.targets", t, dim=1, integer=True)
        if t.dtype != torch.long:
            raise ValueError(f"embeddings.targets must be int64, got {t.dtype}")
        if h is not None:
            checks.check_tensor("embeddings.features", h, dim=2, floating=True)
        checks.check_same_device(**{"embeddings.logits": lg, "embeddings.targets": t, "embeddings.features": h})
        checks.check_rows(lg.shape[0], **{"embeddings.targets": t, "embeddings.features": h})
        checks.check_range("embeddings.targets", t, 0, lg.shape[1])
        return embeddings, None if h is None else h.detach()
    if isinstance(embeddings, tuple) and not isinstance(embeddings, torch.Tensor):
        if len(embeddings) != 2:
            raise ValueError(f"factored embeddings must be a (grad, features) pair, got {len(embeddings)} items")
        a, h = embeddings
        checks.check_tensor("embeddings.grad", a, dim=2, floating=True)
        checks.check_tensor("embeddings.features", h, dim=2, floating=True)
        checks.check_same_device(**{"embeddings.grad": a, "embeddings.features": h})
        checks.check_rows(a.shape[0], **{"embeddings.features": h})
        return a.detach(), h.detach()
    checks.check_tensor("embeddings", embeddings, dim=2, floating=True)
    return embeddings.detach(), None


def resolve_backend(backend: str, device: torch.device) -> str:
    mode = _ext.triton_mode()
    if backend == "auto":
        return "triton" if device.type == "cuda" and mode == "compiled" else "torch"
    if backend == "triton":
        if mode == "unavailable":
            raise ValueError("backend='triton' needs triton and a CUDA device (or TRITON_INTERPRET=1)")
        if (mode == "compiled") != (device.type == "cuda"):
            raise ValueError(f"backend='triton' runs on {'CUDA' if mode == 'compiled' else 'CPU'} tensors here, "
                             f"got tensors on {device}")
    return backend


class Checked(NamedTuple):
    """What :func:`check_arguments` returns: the rows, features or None, their device, the
    budget (None, an int or a per-class tensor), the resolved backend, and the largest
    absolute value of x and of h (0.0 without h) as Python floats."""
    x: torch.Tensor
    h: Optional[torch.Tensor]
    device: torch.device
    budget: object
    backend: str
    x_max: float
    h_max: float


def _largest_values(x, h: Optional[torch.Tensor]):
    """max |x| and max |h| in one host sync; NaN or inf anywhere raises the usual
    "contains NaN or inf" error naming the tensor. For :class:`LazyEmbeddings` the logits
    must be finite (-inf too is refused) and max |x| is the bound 1."""
    def largest(t):
        if not t.numel():
            return t.new_zeros((), dtype=torch.float64)
        lo, hi = torch.aminmax(t)  # no |t| copy of the embeddings; NaN propagates
        return torch.maximum(hi.double(), -lo.double())  # float64: 1e300 stays finite here

    lazy = isinstance(x, LazyEmbeddings)
    parts = [largest(x.logits if lazy else x)] + ([] if h is None else [largest(h)])
    values = torch.stack(parts).tolist()
    names = ["embeddings.logits" if lazy else "embeddings" if h is None else "embeddings.grad",
             "embeddings.features"]
    for name, v in zip(names, values):
        if not math.isfinite(v):
            raise ValueError(f"{name} contains NaN or inf")
    # softmax − onehot lies in [−1, 1]: a bound is all check_magnitude needs
    return 1.0 if lazy else values[0], values[1] if h is not None else 0.0


def check_magnitude(checked: Checked, largest_class: int) -> None:
    """Refuse embeddings whose float32 squared distances or gain sums could overflow (they
    would silently give infinite costs and rows of weight 0). Rows are cast to float32 and
    (plain rows) centred per class, so each entry becomes at most 2·max|x| (plain) and a
    row's squared norm at most D·(2·max|x|)² or, factored, C·max|g|²·d·max|h|²; a squared
    distance is at most 4 such norms and a gain sums up to n_c costs."""
    x, h = checked.x, checked.h
    if h is None:  # R, the bound on a row norm (products, not powers: inf rather than OverflowError)
        norm = 2.0 * checked.x_max * math.sqrt(x.shape[1])
    else:
        norm = checked.x_max * checked.h_max * math.sqrt(x.shape[1] * h.shape[1])
    if norm > math.sqrt(_FLOAT32_MAX / (4.0 * max(largest_class, 1))):
        name = "embeddings" if h is None else "embeddings (grad, features)"
        biggest = checked.x_max if h is None else max(checked.x_max, checked.h_max)
        raise ValueError(f"{name} has values up to {biggest:.3g}: too large for float32 distances over a class of "
                         f"{largest_class} rows (squared distances or their sums would overflow); rescale them")


def check_indices_unique(indices: torch.Tensor) -> None:
    if indices.numel() and torch.unique(indices).numel() != indices.numel():
        raise ValueError("indices has repeated values; each row needs its own dataset index")


def check_arguments(embeddings, labels, indices, fraction, budget, similarity, optimizer, epsilon, backend,
                    generator) -> Checked:
    """Validate :func:`~coreaug_fast.select_coreset`'s arguments on one process (the
    distributed path adds its checks of ``indices`` across ranks)."""
    x, h = check_embeddings(embeddings)
    n = x.shape[0]
    checks.check_tensor("labels", labels, dim=1, integer=True)
    if indices is not None:
        checks.check_tensor("indices", indices, dim=1, integer=True)
    device = checks.check_same_device(embeddings=x, features=h, labels=labels, indices=indices)
    check_labels(labels, n)
    if indices is not None:
        checks.check_rows(n, indices=indices)
    x_max, h_max = _largest_values(x, h)
    if (fraction is None) == (budget is None):
        raise ValueError("give exactly one of fraction and budget")
    if fraction is not None:
        checks.check_fraction("fraction", fraction)
    else:
        budget = check_budget(budget, labels)
    checks.check_choice("similarity", similarity, SIMILARITIES)
    checks.check_choice("optimizer", optimizer, OPTIMIZERS)
    checks.check_choice("backend", backend, BACKENDS)
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be a number in (0, 1), got {epsilon!r}")
    checks.check_generator("generator", generator)
    return Checked(x, h, device, budget, resolve_backend(backend, device), x_max, h_max)


# ------------------------------------------------------------------ the run

def run_backend(backend, x, h, offsets, budgets, total, sim, opt, epsilon, seed):
    """One call of a backend on rows grouped by class. Returns (rows, gains, assignment)
    with rows into x and positions into this call's output."""
    if total == 0:
        dev = x.device
        return (torch.empty(0, dtype=torch.long, device=dev), torch.empty(0, device=dev),
                torch.full((x.shape[0],), -1, dtype=torch.long, device=dev))
    if backend == "triton" and opt != "stochastic":
        from ..kernels.facility_location import facility_location

        return facility_location(x, h, offsets, budgets, total, similarity=sim, optimizer=opt,
                                        max_matrix_bytes=MAX_MATRIX_BYTES)
    _ext.require_extension("select_coreset")
    dev = x.device
    rows, gains, assign = torch.ops.coreaug.facility_location(
        x.cpu(), None if h is None else h.cpu(), offsets, budgets, total, code(SIMILARITIES, sim),
        code(OPTIMIZERS, opt), float(epsilon), seed, MAX_MATRIX_BYTES)
    return rows.to(dev), gains.to(dev), assign.to(dev)


def run_bytes(backend: str, device: torch.device) -> int:
    """The most bytes one run of classes may take: :data:`CHUNK_BYTES`, or on a GPU with
    the Triton backend as much as its stored cost matrices may take there, if more (one
    launch then still covers many classes: one greedy program per class)."""
    if backend == "triton" and device.type == "cuda":
        from ..kernels.facility_location import matrix_budget

        return max(CHUNK_BYTES, matrix_budget(device, MAX_MATRIX_BYTES))
    return CHUNK_BYTES


def runs(groups: ClassGroups, width: int, backend: str, limit: int, progress: bool):
    """Class ranges [lo, hi) to prepare and run one call each: consecutive classes whose
    float32 rows (``width`` floats each; with the Triton backend plus their stored cost
    matrices) take at most ``limit`` bytes, a larger class alone; with a progress bar,
    also cut into ~50 ranges of similar work."""
    counts = groups.counts.tolist()
    m = len(counts)
    if m == 0:
        return [(0, 0)]
    cuts, used = {0, m}, 0
    for c, n in enumerate(counts):
        size = 4 * n * (width + ((n + 15) // 16 * 16 if backend == "triton" else 0))
        if used and used + size > limit:
            cuts.add(c)
            used = 0
        used += size
    if progress and m > 1:
        work = [float(n) ** 2 * width for n in counts]
        target, acc = sum(work) / 50, 0.0
        for c in range(m):
            acc += work[c]
            if acc >= target:
                cuts.add(c + 1)
                acc = 0.0
    cuts = sorted(cuts)
    return list(zip(cuts[:-1], cuts[1:]))


def _progress_bar(groups: ClassGroups, width: int, backend: str, progress: Optional[bool]):
    """A tqdm bar over classes or None (see ``progress`` of select_coreset)."""
    if progress is None:
        work = float((groups.counts.double() ** 2).sum()) * width
        if not (backend == "torch" and work > PROGRESS_WORK):
            return None
        disable = None  # tqdm shows it on a terminal only
    elif not progress:
        return None
    else:
        disable = False
    from tqdm.auto import tqdm

    return tqdm(total=groups.counts.numel(), desc="coreset", unit="class", disable=disable)


def _stochastic_seed(optimizer: str, generator: Optional[torch.Generator]) -> int:
    if optimizer != "stochastic":
        return 0
    gdev = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=gdev))


def select_local(x, h: Optional[torch.Tensor], groups: ClassGroups, *, similarity: str,
                 optimizer: str, epsilon: float, backend: str, generator: Optional[torch.Generator],
                 progress: Optional[bool], indices: Optional[torch.Tensor] = None) -> Coreset:
    """Greedy facility location per class on one process, arguments already checked.

    Args:
        x: (n, D) floating rows, or the grad factor (n, C) when ``h`` (n, d) is given, or a
            :class:`LazyEmbeddings` (``h`` then its features or None). Not changed.
        groups: the rows' :class:`ClassGroups` (picks per class included).
        backend: ``"triton"`` or ``"torch"`` (resolved, not ``"auto"``); the rest as
            :func:`~coreaug_fast.select_coreset`.

    Returns:
        A :class:`Coreset` on the device of ``x``.

    Memory: the classes run a few at a time (:func:`runs`); each run's rows are float32
    copies (computed from the logits for lazy embeddings), centred and scaled
    (:mod:`~coreaug_fast.selection.class_rows`), in one buffer that every run reuses (CPU) or freed
    before the next run's are made (CUDA).
    """
    device = x.device
    seed = _stochastic_seed(optimizer, generator)
    width = x.shape[1] + (0 if h is None else h.shape[1])
    bar = _progress_bar(groups, width, backend, progress)
    rows_l, gains_l, assign_l = [], [], []
    pos, work = 0, {}
    for lo, hi in runs(groups, width, backend, run_bytes(backend, device), bar is not None):
        r0, r1 = int(groups.offsets[lo]), int(groups.offsets[hi])
        xs, hs, gain_unit = class_rows.prepared(x, h, groups.perm[r0:r1], groups.counts[lo:hi], similarity, work)
        off = groups.offsets[lo:hi + 1] - r0
        bud = groups.budgets[lo:hi].contiguous()
        tot = int(bud.sum())
        r, g, a = run_backend(backend, xs, hs, off, bud, tot, similarity, optimizer, epsilon, seed + lo)
        del xs, hs  # before the next run's rows are made (on CUDA; CPU runs share ``work``)
        if gain_unit is not None:
            per_pick = torch.repeat_interleave(gain_unit, bud.to(gain_unit.device), output_size=tot)
            g = (g.double() * per_pick.to(g.device)).float()
        rows_l.append(r + r0)
        gains_l.append(g)
        assign_l.append(torch.where(a >= 0, a + pos, a))
        pos += tot
        if bar is not None:
            bar.update(hi - lo)
    if bar is not None:
        bar.close()
    return _assemble(groups, torch.cat(rows_l), torch.cat(gains_l), torch.cat(assign_l), device, indices)


def _assemble(groups: ClassGroups, rows_sorted, gains, assign_sorted, device, indices) -> Coreset:
    """The Coreset from the backend's output on rows in class order."""
    perm = groups.perm
    assignment = torch.empty(perm.shape[0], dtype=torch.long, device=device)
    assignment[perm] = assign_sorted
    valid = assign_sorted[assign_sorted >= 0]
    weights = torch.bincount(valid, minlength=groups.total).float()
    chosen = perm[rows_sorted]
    budgets_dev = groups.budgets.to(device)
    return Coreset(
        indices=chosen if indices is None else indices[chosen].long(),
        weights=weights,
        gains=gains.float(),
        assignment=assignment,
        labels=torch.repeat_interleave(groups.classes, budgets_dev),
        classes=groups.classes,
        offsets=torch.cat([budgets_dev.new_zeros(1), torch.cumsum(budgets_dev, 0)]),
    )


if _ext.available():

    @torch.library.register_fake("coreaug::facility_location")
    def _(x, features, offsets, budgets, total, similarity, optimizer, epsilon, seed, max_matrix_bytes):
        torch._check(x.dim() == 2, lambda: "x must be 2-D")
        torch._check(offsets.dim() == 1 and budgets.dim() == 1, lambda: "offsets and budgets must be 1-D")
        torch._check(offsets.shape[0] == budgets.shape[0] + 1, lambda: "offsets must have len(budgets) + 1 entries")
        return (x.new_empty((total,), dtype=torch.long), x.new_empty((total,), dtype=torch.float32),
                x.new_empty((x.shape[0],), dtype=torch.long))
