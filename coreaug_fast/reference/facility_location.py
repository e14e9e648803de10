"""Naive greedy facility location in float64 plain PyTorch: the twin of
:func:`coreaug_fast.select_coreset` for tests. O(k · n²) per class; small inputs only.

Imports no code of the path it judges (only the :class:`~coreaug_fast.Coreset` data type):
the picks-per-class rule is restated here, and ``tests/test_selection.py`` checks that it
agrees with :func:`coreaug_fast.selection.picks_for_fraction`.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional, Sequence, Union

import torch

from ..coreset import Coreset


def picks_reference(fraction, n: int) -> int:
    """``min(n, ceil(q · n))`` for a class of ``n`` rows, q the fraction as written: its
    shortest decimal form (0.07 is 7/100), or a :class:`fractions.Fraction` as is."""
    q = fraction if isinstance(fraction, Fraction) else Fraction(str(fraction))
    return min(n, math.ceil(q * n))


def _costs(x: torch.Tensor, norms: torch.Tensor, similarity: str) -> torch.Tensor:
    """(n, n) float64 costs between the rows of one class x (n, D), squared distances below
    2^-18 · (‖x_i‖² + ‖x_j‖²) (``norms``: the squared norms the fast paths see) taken as 0."""
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    # below float32's resolution of ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j: duplicates (all paths)
    d2 = torch.where(d2 > 2.0 ** -18 * (norms[:, None] + norms[None, :]), d2, torch.zeros_like(d2))
    if similarity == "sqdistance":
        return d2
    if similarity == "distance":
        return d2.sqrt()
    return -torch.exp(-d2.sqrt() / x.shape[1])


def _naive_greedy(cost: torch.Tensor, level: float, k: int):
    """(chosen local rows, their gains): k naive greedy steps on one class's costs from the
    start level b = ``level``, every gain recomputed at every step."""
    u = torch.full((cost.shape[0],), level, dtype=torch.float64)
    chosen, gains = [], []
    for _ in range(k):
        g = torch.clamp(u[:, None] - cost, min=0).sum(0)  # g[e] = Σ_i max(0, u_i − K_ie)
        g[chosen] = -1.0
        e = int(torch.argmax(g))  # first maximum: the lowest row
        chosen.append(e)
        gains.append(float(g[e]))
        u = torch.minimum(u, cost[e])
    return chosen, gains


def facility_location_reference(embeddings, labels: torch.Tensor, fraction: Optional[float] = None, *,
                                budget: Union[int, Sequence[int], None] = None,
                                similarity: str = "distance"):
    """Naive greedy facility location per class, everything in float64 on the CPU.

    Same definitions as :func:`coreaug_fast.select_coreset`: cost K = ‖g_i − g_j‖,
    ‖g_i − g_j‖² or −exp(−‖g_i − g_j‖ / dim); start level b = max K over the class for the
    distances, 0 for ``"exp"``; the gain of e is Σ_i max(0, u_i − K_ie) with
    u_i = min(b, min_{j∈S} K_ij); ties (equal float64 gains) go to the lowest row; picks per
    class by :func:`picks_reference`; squared distances below
    2^-18 · (‖x_i‖² + ‖x_j‖²) (norms of the class-centred rows, or of the factors' product
    for factored rows) count as 0. Factored embeddings are materialised.

    Returns:
        A :class:`coreaug_fast.Coreset` on the CPU, with float64 ``gains``.
    """
    factored = isinstance(embeddings, tuple)  # (grad, features), e.g. FactoredEmbeddings
    if factored:
        a, h = (t.detach().cpu().double() for t in embeddings)
        x = torch.einsum("nc,nd->ncd", a, h).reshape(a.shape[0], -1)  # row i = grad[i] ⊗ features[i]
    else:
        x = embeddings
    x = x.detach().cpu().double()
    labels = labels.detach().cpu().long()
    classes = torch.unique(labels)
    rows_out, gains_out, weights_out, labels_out, offsets = [], [], [], [], [0]
    assignment = torch.full((x.shape[0],), -1, dtype=torch.long)
    for c in classes.tolist():
        rows = (labels == c).nonzero().squeeze(1)
        n = rows.numel()
        if budget is None:
            k = picks_reference(fraction, n)
        else:
            k = min(n, int(budget if isinstance(budget, int) else budget[c]))
        xc = x[rows] - x[rows].mean(0)
        norms = (xc * xc).sum(1) if not factored else (a[rows] ** 2).sum(1) * (h[rows] ** 2).sum(1)
        cost = _costs(x[rows], norms, similarity)
        chosen, gains = _naive_greedy(cost, float(cost.max()) if similarity != "exp" else 0.0, k)
        base = offsets[-1]
        if chosen:
            # each row's representative: the earliest chosen among its cheapest
            rep = cost[torch.tensor(chosen)].argmin(0)
            assignment[rows] = base + rep
            weights_out.append(torch.bincount(rep, minlength=k).float())
        rows_out.append(rows[torch.tensor(chosen, dtype=torch.long)])
        gains_out.append(torch.tensor(gains, dtype=torch.float64))
        labels_out.append(torch.full((k,), c, dtype=torch.long))
        offsets.append(base + k)
    cat = lambda xs, dt: torch.cat(xs) if xs else torch.empty(0, dtype=dt)  # noqa: E731
    return Coreset(
        indices=cat(rows_out, torch.long),
        weights=cat(weights_out, torch.float32),
        gains=cat(gains_out, torch.float64),
        assignment=assignment,
        labels=cat(labels_out, torch.long),
        classes=classes,
        offsets=torch.tensor(offsets, dtype=torch.long),
    )
