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

from typing import Optional, Sequence, Union

import torch

from .. import checks
from ..coreset import Coreset
from . import engine
from .embeddings import LazyEmbeddings
from .engine import ClassGroups


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
            pair standing for the rows grad ⊗ features, never materialised; or a
            :class:`~coreaug_fast.LazyEmbeddings` (``gradient_embeddings(..., lazy=True)``;
            its logits must be finite), whose rows are computed a few classes at a time:
            the same result as its :meth:`~coreaug_fast.LazyEmbeddings.materialize`, bit
            for bit, without the (n, C) embeddings ever existing (with ``group=`` they are
            materialised: the sharded path exchanges rows). Computed in float32; plain rows
            are centred per class first. Classes are prepared and selected in runs of
            about :data:`coreaug_fast.selection.engine.CHUNK_BYTES` of float32 rows, so beyond the
            inputs the selection holds one run's rows and each worker thread's cost matrix.
        labels: (n,) integer class ids >= 0, same device. Classes need not be contiguous.
        fraction: picks per class ``k_c = ceil(fraction · n_c)``, fraction in (0, 1], computed
            exactly on the fraction's decimal form (0.07 of 100 rows is 7):
            :func:`~coreaug_fast.selection.picks_for_fraction`.
        budget: instead of ``fraction``: picks per class, an int for every class or a
            sequence indexed by class id. Capped at n_c; 0 picks nothing.
        similarity: ``"distance"`` (the paper), ``"sqdistance"`` (apricot's) or ``"exp"``
            (submodlib's); see the module docstring.
        optimizer: ``"lazy"`` (exact: naive greedy's sequence bit for bit; equal computed
            gains go to the lowest row, see *Ties* below),
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
            ids), no value twice; the returned ``indices`` are its values.
        group: a ``torch.distributed`` process group: select over the rows of all its ranks
            (collective; ``indices`` required; each rank passes its own shard). Every rank
            returns the same global coreset, equal to one process's on all rows in ascending
            ``indices``; ``assignment`` covers this rank's rows. See
            :mod:`coreaug_fast.selection.distributed`.
        max_rows_per_rank: with ``group``: classes with more rows are split across ranks and
            selected approximately by GreeDi (default None: every class exactly, on one rank).
        progress: tqdm bar over classes: True, False, or None (default) for a bar only on
            large CPU selections (and only on a terminal).

    Returns:
        A :class:`Coreset` on the device of ``embeddings``.

    Ties: gains are computed from float32 costs of the class-centred rows, summed in a fixed
    order; among rows with equal *computed* gains the lowest row wins. Rows whose gains are
    equal only in exact arithmetic may be split by rounding: for ``x = [[-.5], [-.75], [0],
    [.75], [0]]``, budget 2, ``"sqdistance"``, rows 0 and 1 both gain exactly 0.75 at the
    second step, but centring by the mean −0.1 makes their float32 costs inexact and row 1
    comes out 1 ulp ahead ([2, 1]; the float64 twin gives [2, 0]). When the centred rows and
    their squared distances are exact in float32 (e.g. small dyadic values with a dyadic
    class mean), computed ties are exact ties and go to the lowest row.

    Raises:
        ValueError: bad shapes, dtypes, values (NaN/inf embeddings, values so large that
            float32 squared distances would overflow, negative labels, fraction outside
            (0, 1], repeated ``indices``, ...), tensors on different devices or on the meta
            device, a ``group`` that is not a process group.
        ExtensionNotBuiltError: the CPU path needs the compiled extension.
    """
    checks.check_group(group)
    checks.check_not_meta(embeddings=embeddings, labels=labels, indices=indices)
    budget = _wide_budget(budget)
    if group is not None:
        from .distributed import select_coreset_sharded

        if isinstance(embeddings, LazyEmbeddings):
            engine.check_embeddings(embeddings)  # its targets, before the op reads them
            embeddings = embeddings.materialize()

        return select_coreset_sharded(embeddings, labels, fraction, budget=budget, similarity=similarity,
                                      optimizer=optimizer, epsilon=epsilon, backend=backend, generator=generator,
                                      indices=indices, group=group, max_rows_per_rank=max_rows_per_rank,
                                      progress=progress)
    if max_rows_per_rank is not None:
        raise ValueError("max_rows_per_rank applies to distributed selection; pass group= too")
    checked = engine.check_arguments(embeddings, labels, indices, fraction, budget, similarity, optimizer, epsilon,
                                     backend, generator)
    if indices is not None:
        engine.check_indices_unique(indices)
    groups = ClassGroups(labels, fraction, checked.budget)
    engine.check_magnitude(checked, groups.largest)
    return engine.select_local(checked.x, checked.h, groups, similarity=similarity, optimizer=optimizer,
                               epsilon=epsilon, backend=checked.backend, generator=generator, progress=progress,
                               indices=indices)


# Per-class budgets are capped at the class size, so any entry at or above this is "every row";
# capping here keeps Python ints beyond int64 (2**70) out of torch.as_tensor.
_ALL_ROWS = 2**62


def _wide_budget(budget):
    """A per-class list or tuple of Python / NumPy integers with entries capped at 2**62
    (which every class size is below); anything else unchanged, for the checks to judge."""
    import numbers

    if isinstance(budget, (list, tuple)) and all(isinstance(b, numbers.Integral) and not isinstance(b, bool)
                                                 for b in budget):
        return type(budget)(min(int(b), _ALL_ROWS) for b in budget)
    return budget
