"""Per-class weighted coresets: greedy facility location in gradient space (paper Sec. 4).

For each class c with rows V_c, :func:`select_coreset` maximises
``F(S) = Σ_{i∈V_c} max_{j∈S} s(i, j)`` over ``S ⊆ V_c, |S| = k_c`` with the greedy
algorithm and weights every chosen j by γ_j, the number of rows of V_c whose most similar
chosen element is j. Every similarity is computed as a cost K (smaller = more similar) and a
start level b, ``s = b − K``:

==============  ===========================  ================================
``similarity``  cost K_ij                     start level b
==============  ===========================  ================================
``"distance"``  ‖g_i − g_j‖ (the paper)       max K over the class (the C)
``"sqdistance"``‖g_i − g_j‖² (apricot)        max K over the class
``"exp"``       −exp(−‖g_i − g_j‖ / dim)      0 (so s = exp(−‖·‖/dim), submodlib)
==============  ===========================  ================================

With ``u_i = min(b, min_{j∈S} K_ij)`` the marginal gain of e is
``F(e | S) = Σ_i max(0, u_i − K_ie)``. For the distances any C ≥ max K gives the same
sequence (after the first pick the gain is Σ_i max(0, min_{j∈S} K_ij − K_ie), and the first
pick is the row with the smallest cost sum); the *reported* gains use the smallest valid C,
the class's largest cost, so that ``gains`` sum to F(S) for s = max K − K, exactly the
objective and the gains of apricot's ``FacilityLocationSelection`` with ``"sqdistance"``.
``dim`` is the embedding width (C·d for factored embeddings).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from . import _checks, _ext

SIMILARITIES = ("distance", "sqdistance", "exp")
OPTIMIZERS = ("naive", "lazy", "stochastic")
BACKENDS = ("auto", "triton", "torch")

#: Largest per-class cost matrix (bytes) the CPU path stores; larger classes compute cost
#: rows on demand (much slower, but memory stays O(n·D)). Override with the environment
#: variable ``COREAUG_MAX_MATRIX_BYTES``.
MAX_MATRIX_BYTES = int(os.environ.get("COREAUG_MAX_MATRIX_BYTES", 2 << 30))

#: Estimated work (cost-matrix multiply-adds) above which ``progress=None`` shows a bar.
PROGRESS_WORK = 2e11


@dataclass(frozen=True)
class Coreset:
    """A weighted subset, chosen per class.

    Attributes:
        indices: (k,) int64, the chosen examples grouped by class (ascending class id), each
            class in selection order. Row positions of the input, or the values of the
            ``indices=`` argument when one was given.
        weights: (k,) float32, γ_j: how many rows of its class each chosen example
            represents (they sum to n_c within a class). 1 for the baselines.
        gains: (k,) float32, the marginal gain F(e | S) at each greedy step (see the module
            docstring for the scale); for :func:`select_max_loss` the losses, for
            :func:`select_random` zeros.
        assignment: (n,) int64, for every input row the position in ``indices`` of its
            representative (the earliest chosen among its most similar); -1 for rows of a
            class with no picks, and for the baselines, -1 for rows not chosen.
        labels: (k,) int64, the class of each chosen example.
        classes: (m,) int64, the classes present in ``labels``, ascending.
        offsets: (m + 1,) int64, ``indices[offsets[t]:offsets[t+1]]`` are class
            ``classes[t]``'s picks.
    """

    indices: torch.Tensor
    weights: torch.Tensor
    gains: torch.Tensor
    assignment: torch.Tensor
    labels: torch.Tensor
    classes: torch.Tensor
    offsets: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.shape[0])


class _Plan:
    """Rows grouped by class: ``perm`` sorts rows by class (stably, so rows keep their
    order inside a class), ``offsets`` are class starts in that order."""

    def __init__(self, labels: torch.Tensor, fraction, budget):
        self.classes, counts = torch.unique(labels, sorted=True, return_counts=True)
        self.perm = torch.sort(labels, stable=True).indices
        self.counts = counts.cpu()
        self.offsets = torch.zeros(counts.numel() + 1, dtype=torch.long)
        torch.cumsum(self.counts, 0, out=self.offsets[1:])
        if budget is None:
            k = torch.tensor([min(n, math.ceil(fraction * n)) for n in self.counts.tolist()], dtype=torch.long)
        elif isinstance(budget, int):
            k = torch.clamp(self.counts, max=budget)
        else:
            per_class = torch.as_tensor(budget).cpu().long()
            k = torch.minimum(self.counts, per_class[self.classes.cpu()])
        self.budgets = k
        self.total = int(k.sum())


def _check_budget(budget, labels: torch.Tensor):
    if isinstance(budget, bool):
        raise ValueError(f"budget must be an int or a per-class sequence of ints, got {budget!r}")
    if isinstance(budget, int):
        if budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        return budget
    try:
        b = torch.as_tensor(budget)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"budget must be an int or a per-class sequence of ints, got {type(budget).__name__}") from None
    if b.dim() != 1 or b.is_floating_point() or b.is_complex() or b.dtype == torch.bool:
        raise ValueError(f"budget must be an int or a 1-D sequence of ints, got {b.dtype} of shape {tuple(b.shape)}")
    if b.numel() and int(b.min()) < 0:
        raise ValueError(f"budget has value {int(b.min())}, expected >= 0")
    needed = int(labels.max()) + 1 if labels.numel() else 0
    if b.numel() < needed:
        raise ValueError(f"budget has {b.numel()} entries but labels has class {needed - 1}")
    return b


def _check_labels(labels, n: Optional[int]) -> torch.Tensor:
    _checks.check_tensor("labels", labels, dim=1, integer=True)
    if n is not None:
        _checks.check_rows(n, labels=labels)
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels has value {int(labels.min())}, expected class ids >= 0")
    return labels


def _check_embeddings(embeddings):
    """(x, features or None), shapes and dtypes checked."""
    if isinstance(embeddings, tuple) and not isinstance(embeddings, torch.Tensor):
        if len(embeddings) != 2:
            raise ValueError(f"factored embeddings must be a (grad, features) pair, got {len(embeddings)} items")
        a, h = embeddings
        _checks.check_tensor("embeddings.grad", a, dim=2, floating=True)
        _checks.check_tensor("embeddings.features", h, dim=2, floating=True)
        _checks.check_same_device(**{"embeddings.grad": a, "embeddings.features": h})
        _checks.check_rows(a.shape[0], **{"embeddings.features": h})
        return a.detach(), h.detach()
    _checks.check_tensor("embeddings", embeddings, dim=2, floating=True)
    return embeddings.detach(), None


def _resolve_backend(backend: str, device: torch.device) -> str:
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


def _centred(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows minus their class mean. Any per-class offset leaves the distances unchanged;
    the mean makes the norms small, so the expansion ‖x‖² + ‖y‖² − 2x·y cancels far less.
    segment_reduce is deterministic (index_add_ on CUDA is not), so the result is too."""
    counts = (offsets[1:] - offsets[:-1]).to(x.device)
    if x.shape[0] == 0:
        return x
    means = torch.segment_reduce(x, "mean", lengths=counts, axis=0)
    return x - torch.repeat_interleave(means, counts, dim=0)


def _run(backend, x, h, offsets, budgets, total, sim, opt, epsilon, seed):
    """One call of a backend on rows grouped by class. Returns (rows, gains, assignment)
    with rows into x and positions into this call's output."""
    if total == 0:
        dev = x.device
        return (torch.empty(0, dtype=torch.long, device=dev), torch.empty(0, device=dev),
                torch.full((x.shape[0],), -1, dtype=torch.long, device=dev))
    if backend == "triton" and opt != "stochastic":
        from .kernels import greedy

        return greedy.facility_location(x, h, offsets, budgets, total, similarity=sim, optimizer=opt,
                                        max_matrix_bytes=MAX_MATRIX_BYTES)
    _ext.require_extension("select_coreset")
    dev = x.device
    rows, gains, assign = torch.ops.coreaug.facility_location(
        x.cpu(), None if h is None else h.cpu(), offsets, budgets, total,
        SIMILARITIES.index(sim), OPTIMIZERS.index(opt), float(epsilon), seed, MAX_MATRIX_BYTES)
    return rows.to(dev), gains.to(dev), assign.to(dev)


def _chunks(plan: _Plan, width: int, enabled: bool):
    """Class ranges [lo, hi) to run one call each: one range, or ~50 of similar work when a
    progress bar is shown."""
    m = plan.counts.numel()
    if not enabled or m <= 1:
        return [(0, m)]
    work = plan.counts.double() ** 2 * width
    target = float(work.sum()) / 50
    ranges, lo, acc = [], 0, 0.0
    for c in range(m):
        acc += float(work[c])
        if acc >= target or c == m - 1:
            ranges.append((lo, c + 1))
            lo, acc = c + 1, 0.0
    return ranges


def _check_arguments(embeddings, labels, indices, fraction, budget, similarity, optimizer, epsilon, backend,
                     generator):
    """Validate :func:`select_coreset`'s arguments on one process (the distributed path adds
    its own checks of ``indices``). Returns (grad rows, features or None, device, budget)."""
    x, h = _check_embeddings(embeddings)
    n = x.shape[0]
    _checks.check_tensor("labels", labels, dim=1, integer=True)
    if indices is not None:
        _checks.check_tensor("indices", indices, dim=1, integer=True)
    device = _checks.check_same_device(embeddings=x, features=h, labels=labels, indices=indices)
    _check_labels(labels, n)
    if indices is not None:
        _checks.check_rows(n, indices=indices)
    _checks.check_finite("embeddings" if h is None else "embeddings.grad", x)
    if h is not None:
        _checks.check_finite("embeddings.features", h)
    if (fraction is None) == (budget is None):
        raise ValueError("give exactly one of fraction and budget")
    if fraction is not None:
        _checks.check_fraction("fraction", fraction)
    else:
        budget = _check_budget(budget, labels)
    _checks.check_choice("similarity", similarity, SIMILARITIES)
    _checks.check_choice("optimizer", optimizer, OPTIMIZERS)
    _checks.check_choice("backend", backend, BACKENDS)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be a number in (0, 1), got {epsilon!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return x, h, device, budget


def select_coreset(embeddings, labels: torch.Tensor, fraction: Optional[float] = None, *,
                   budget: Union[int, Sequence[int], torch.Tensor, None] = None,
                   similarity: str = "distance", optimizer: str = "lazy", epsilon: float = 0.01,
                   backend: str = "auto", generator: Optional[torch.Generator] = None,
                   indices: Optional[torch.Tensor] = None, group=None,
                   max_rows_per_rank: Optional[int] = None, progress: Optional[bool] = None) -> Coreset:
    """Choose a weighted coreset per class by greedy facility location.

    Args:
        embeddings: (n, D) floating tensor (float32, float16, bfloat16 or float64; any
            strides), e.g. from :func:`coreaug_fast.gradient_embeddings`; or a
            :class:`~coreaug_fast.FactoredEmbeddings` / ``(grad (n, C), features (n, d))``
            pair standing for the rows grad ⊗ features, never materialised. Computed in
            float32; plain rows are centred per class first.
        labels: (n,) integer class ids >= 0, same device. Classes need not be contiguous.
        fraction: picks per class ``k_c = ceil(fraction · n_c)``, fraction in (0, 1].
        budget: instead of ``fraction``: picks per class, an int for every class or a
            sequence indexed by class id. Capped at n_c; 0 picks nothing.
        similarity: ``"distance"`` (the paper), ``"sqdistance"`` (apricot's) or ``"exp"``
            (submodlib's); see the module docstring.
        optimizer: ``"lazy"`` (exact: naive greedy's sequence, ties to the lowest row),
            ``"naive"`` (every gain every step; for checking), or ``"stochastic"``
            (stochastic greedy: each step the best of ``ceil(n_c / k_c · ln(1/epsilon))``
            rows drawn without replacement from the unchosen ones).
        epsilon: stochastic greedy's ε in (0, 1).
        backend: ``"triton"`` (GPU kernels: all classes at once, no host synchronisation
            per greedy step), ``"torch"`` (the compiled CPU op; CUDA inputs are copied to the
            host) or ``"auto"`` (Triton for CUDA tensors, else the CPU op). Stochastic greedy
            always runs in the CPU op (its samples then match across backends).
        generator: draws stochastic greedy's samples (default: torch's global generator).
            Same generator state and backend, same result.
        indices: optional (n,) integer dataset indices of the rows (e.g. a shard's global
            ids); the returned ``indices`` are its values.
        group: a ``torch.distributed`` process group: select over the rows of all its ranks
            (collective; ``indices`` required; each rank passes its own shard). Every rank
            returns the same global coreset, equal to one process's on all rows in ascending
            ``indices``; ``assignment`` covers this rank's rows. See
            :mod:`coreaug_fast.distributed`.
        max_rows_per_rank: with ``group``: classes with more rows are split across ranks and
            selected approximately by GreeDi (default None: every class exactly, on one rank).
        progress: tqdm bar over classes: True, False, or None (default) for a bar only on
            large CPU selections (and only on a terminal).

    Returns:
        A :class:`Coreset` on the device of ``embeddings``.

    Raises:
        ValueError: bad shapes, dtypes, values (NaN/inf embeddings, negative labels, fraction
            outside (0, 1], ...) or tensors on different devices.
        ExtensionNotBuiltError: the CPU path needs the compiled extension.
    """
    if group is not None:
        from .distributed import select_coreset_sharded

        return select_coreset_sharded(embeddings, labels, fraction, budget=budget, similarity=similarity,
                                      optimizer=optimizer, epsilon=epsilon, backend=backend, generator=generator,
                                      indices=indices, group=group, max_rows_per_rank=max_rows_per_rank,
                                      progress=progress)
    if max_rows_per_rank is not None:
        raise ValueError("max_rows_per_rank applies to distributed selection; pass group= too")
    x, h, device, budget = _check_arguments(embeddings, labels, indices, fraction, budget, similarity, optimizer,
                                            epsilon, backend, generator)
    backend = _resolve_backend(backend, device)

    plan = _Plan(labels, fraction, budget)
    perm = plan.perm
    xs = x[perm].float().contiguous()
    hs = None if h is None else h[perm].float().contiguous()
    if hs is None:
        xs = _centred(xs, plan.offsets)
    seed = 0
    if optimizer == "stochastic":
        gdev = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gdev))

    width = xs.shape[1] + (0 if hs is None else hs.shape[1])
    if progress is None:
        work = float((plan.counts.double() ** 2).sum()) * width
        show = backend == "torch" and work > PROGRESS_WORK
        disable = None if show else True  # None: tqdm shows it on a terminal only
    else:
        disable = not progress
    ranges = _chunks(plan, width, disable is not True)
    rows_l, gains_l, assign_l = [], [], []
    bar = None
    if disable is not True:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.counts.numel(), desc="coreset", unit="class", disable=disable)
    pos = 0
    for lo, hi in ranges:
        r0, r1 = int(plan.offsets[lo]), int(plan.offsets[hi])
        off = plan.offsets[lo:hi + 1] - r0
        bud = plan.budgets[lo:hi].contiguous()
        tot = int(bud.sum())
        r, g, a = _run(backend, xs[r0:r1], None if hs is None else hs[r0:r1], off, bud, tot,
                       similarity, optimizer, epsilon, seed + lo)
        rows_l.append(r + r0)
        gains_l.append(g)
        assign_l.append(torch.where(a >= 0, a + pos, a))
        pos += tot
        if bar is not None:
            bar.update(hi - lo)
    if bar is not None:
        bar.close()
    rows_sorted = torch.cat(rows_l)
    assign_sorted = torch.cat(assign_l)

    assignment = torch.empty(x.shape[0], dtype=torch.long, device=device)
    assignment[perm] = assign_sorted
    valid = assign_sorted[assign_sorted >= 0]
    weights = torch.bincount(valid, minlength=plan.total).float()
    chosen = perm[rows_sorted]
    budgets_dev = plan.budgets.to(device)
    return Coreset(
        indices=chosen if indices is None else indices[chosen].long(),
        weights=weights,
        gains=torch.cat(gains_l).float(),
        assignment=assignment,
        labels=torch.repeat_interleave(plan.classes, budgets_dev),
        classes=plan.classes,
        offsets=torch.cat([budgets_dev.new_zeros(1), torch.cumsum(budgets_dev, 0)]),
    )


def _baseline(order: torch.Tensor, labels: torch.Tensor, fraction: float, gains: torch.Tensor) -> Coreset:
    """Take the first ceil(fraction · n_c) rows of each class in ``order``, a permutation
    of the rows sorted by class."""
    device = labels.device
    plan = _Plan(labels, fraction, None)
    counts = plan.counts.to(device)
    starts = plan.offsets[:-1].to(device)
    k = plan.budgets.to(device)
    cls = torch.repeat_interleave(torch.arange(counts.numel(), device=device), k)
    first = torch.repeat_interleave(torch.cumsum(k, 0) - k, k)
    within = torch.arange(plan.total, device=device) - first
    chosen = order[starts[cls] + within]
    assignment = torch.full((labels.shape[0],), -1, dtype=torch.long, device=device)
    assignment[chosen] = torch.arange(plan.total, device=device)
    return Coreset(
        indices=chosen,
        weights=torch.ones(plan.total, device=device),
        gains=gains[chosen].float(),
        assignment=assignment,
        labels=labels[chosen].long(),
        classes=plan.classes,
        offsets=torch.cat([k.new_zeros(1), torch.cumsum(k, 0)]),
    )


def select_random(labels: torch.Tensor, fraction: float, generator: Optional[torch.Generator] = None) -> Coreset:
    """Random baseline: ``ceil(fraction · n_c)`` rows per class, uniformly without
    replacement, weights 1.

    Args:
        labels: (n,) integer class ids >= 0, any device.
        fraction: in (0, 1].
        generator: the randomness (default: torch's global generator); same state, same subset.

    Returns:
        A :class:`Coreset` on the device of ``labels``: classes ascending, each class in the
        drawn order, ``gains`` zero, ``assignment`` the own position of chosen rows, -1 elsewhere.
    """
    _check_labels(labels, None)
    _checks.check_fraction("fraction", fraction)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    gdev = generator.device if generator is not None else labels.device
    keys = torch.rand(labels.shape[0], generator=generator, device=gdev).to(labels.device)
    order = torch.argsort(keys)
    order = order[torch.sort(labels[order], stable=True).indices]
    return _baseline(order, labels, fraction, torch.zeros(labels.shape[0], device=labels.device))


def select_max_loss(losses: torch.Tensor, labels: torch.Tensor, fraction: float) -> Coreset:
    """Max-loss baseline: the ``ceil(fraction · n_c)`` rows of largest loss per class, weights 1.

    Args:
        losses: (n,) floating per-example losses, finite, same device as ``labels``.
        labels: (n,) integer class ids >= 0.
        fraction: in (0, 1].

    Returns:
        A :class:`Coreset`: classes ascending, each class by decreasing loss (ties to the
        lowest row), ``gains`` the chosen rows' losses, ``assignment`` the own position of
        chosen rows, -1 elsewhere.
    """
    _checks.check_tensor("losses", losses, dim=1, floating=True)
    _checks.check_tensor("labels", labels, dim=1, integer=True)
    _checks.check_same_device(losses=losses, labels=labels)
    _check_labels(labels, losses.shape[0])
    _checks.check_finite("losses", losses)
    _checks.check_fraction("fraction", fraction)
    order = torch.sort(losses.detach().float(), descending=True, stable=True).indices
    order = order[torch.sort(labels[order], stable=True).indices]
    return _baseline(order, labels, fraction, losses.detach())


if _ext.available():

    @torch.library.register_fake("coreaug::facility_location")
    def _(x, features, offsets, budgets, total, similarity, optimizer, epsilon, seed, max_matrix_bytes):
        torch._check(x.dim() == 2, lambda: "x must be 2-D")
        torch._check(offsets.dim() == 1 and budgets.dim() == 1, lambda: "offsets and budgets must be 1-D")
        torch._check(offsets.shape[0] == budgets.shape[0] + 1, lambda: "offsets must have len(budgets) + 1 entries")
        return (x.new_empty((total,), dtype=torch.long), x.new_empty((total,), dtype=torch.float32),
                x.new_empty((x.shape[0],), dtype=torch.long))
