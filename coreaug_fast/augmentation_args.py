"""The arguments of :class:`~coreaug_fast.CoresetAugmentation`, checked and resolved: one
function per group of constructor arguments that depend on each other, each raising a
ValueError that names the argument; and what :meth:`~coreaug_fast.CoresetAugmentation.epoch`
reads from its model and process group."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from . import checks
from .augment_checks import MAX_COPIES
from .vocabulary import EMBEDDINGS, SUBSET_METHODS

#: The largest ``group_batches`` (a window of batches read at once).
MAX_GROUP_BATCHES = 2 ** 20


def embedding_for(embedding: Optional[str], features) -> str:
    """The embedding of the selection: ``embedding``, by default ``"last-layer-features"``
    when ``features`` (the module whose input is the penultimate activation) is given."""
    if features is not None and not isinstance(features, nn.Module):
        raise ValueError(f"features must be an nn.Module (the layer whose input is the penultimate "
                         f"activation, e.g. model.fc), got {type(features).__name__}")
    embedding = embedding if embedding is not None else ("last-layer-features" if features is not None
                                                         else "last-layer")
    checks.check_choice("embedding", embedding, EMBEDDINGS)
    if embedding == "last-layer-features" and features is None:
        raise ValueError('embedding="last-layer-features" needs features=<the module whose input is the '
                         'penultimate activation>, e.g. features=model.fc')
    return embedding


def schedule(method: str, fraction, select_every, copies, subset_only) -> Tuple[float, int, int]:
    """``(fraction, select_every, copies)`` of ``method``: the subset methods take a fraction
    in (0, 1]; ``none`` selects nothing (0) and ``full`` everything (1, with copies >= 1)."""
    fraction = checks.check_fraction("fraction", fraction) if method in SUBSET_METHODS else \
        {"none": 0.0, "full": 1.0}[method]
    select_every = checks.check_int("select_every", select_every, low=1)
    copies = checks.check_int("copies", copies, low=0, high=MAX_COPIES)
    if method == "full" and copies == 0:
        raise ValueError('copies must be >= 1 for method="full"')
    if subset_only and method not in SUBSET_METHODS:
        raise ValueError(f"subset_only needs a subset method {SUBSET_METHODS}, got method={method!r}")
    return fraction, select_every, copies


def padding_for(weak: str, padding) -> int:
    """The weak crop's padding: by default 4 for ``"crop-flip"`` (the CIFAR convention) and 0
    for ``"resized-crop"``, which must have none (its crop replaces the padded one)."""
    if padding is None:
        padding = 4 if weak == "crop-flip" else 0
    padding = checks.check_int("padding", padding, low=0)
    if weak == "resized-crop" and padding:
        raise ValueError(f'padding must be 0 with weak="resized-crop" (the resized crop replaces the padded '
                         f'crop), got {padding}')
    return padding


def normalisation(mean, std, channels: int) -> Tuple[List[float], List[float]]:
    """One mean and one std per channel (:func:`~coreaug_fast.checks.check_mean_std`);
    neither given: 0 and 1, x / 255 unchanged."""
    mean, std = checks.check_mean_std(mean, std, channels)
    return [0.0] * channels if mean is None else mean, [1.0] * channels if std is None else std


def device_of(model: nn.Module, default: torch.device) -> torch.device:
    """The device of the model's first parameter (or buffer); ``default`` when it has none."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return default


def rank_world(group) -> Tuple[int, int]:
    """(this process's rank, the number of ranks) in ``group``; (0, 1) without one."""
    if group is None:
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(group), dist.get_world_size(group)
