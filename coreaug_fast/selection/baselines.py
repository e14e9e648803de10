"""The baselines of the paper's comparisons, with the selectors' return type: a uniform
random subset (:func:`select_random`) and the largest losses (:func:`select_max_loss`), each
``ceil(fraction · n_c)`` rows per class (:func:`~coreaug_fast.selection.picks_for_fraction`),
weight 1."""
from __future__ import annotations

from typing import Optional

import torch

from .. import checks
from ..coreset import Coreset
from . import engine
from .engine import ClassGroups


def _baseline(order: torch.Tensor, labels: torch.Tensor, fraction: float, gains: torch.Tensor) -> Coreset:
    """Take the first :func:`~coreaug_fast.selection.picks_for_fraction` (fraction, n_c) rows
    of each class in ``order``, a permutation of the rows sorted by class."""
    device = labels.device
    groups = ClassGroups(labels, fraction, None)
    counts = groups.counts.to(device)
    starts = groups.offsets[:-1].to(device)
    k = groups.budgets.to(device)
    cls = torch.repeat_interleave(torch.arange(counts.numel(), device=device), k)
    first = torch.repeat_interleave(torch.cumsum(k, 0) - k, k)
    within = torch.arange(groups.total, device=device) - first
    chosen = order[starts[cls] + within]
    assignment = torch.full((labels.shape[0],), -1, dtype=torch.long, device=device)
    assignment[chosen] = torch.arange(groups.total, device=device)
    return Coreset(
        indices=chosen,
        weights=torch.ones(groups.total, device=device),
        gains=gains[chosen].float(),
        assignment=assignment,
        labels=labels[chosen].long(),
        classes=groups.classes,
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
    checks.check_not_meta(labels=labels)
    engine.check_labels(labels, None)
    checks.check_fraction("fraction", fraction)
    checks.check_generator("generator", generator)
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
    checks.check_tensor("losses", losses, dim=1, floating=True)
    checks.check_tensor("labels", labels, dim=1, integer=True)
    checks.check_same_device(losses=losses, labels=labels)
    checks.check_not_meta(losses=losses, labels=labels)
    engine.check_labels(labels, losses.shape[0])
    checks.check_finite("losses", losses)
    checks.check_fraction("fraction", fraction)
    order = torch.sort(losses.detach().float(), descending=True, stable=True).indices
    order = order[torch.sort(labels[order], stable=True).indices]
    return _baseline(order, labels, fraction, losses.detach())

