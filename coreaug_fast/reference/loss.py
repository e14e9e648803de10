from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def weighted_cross_entropy_reference(logits: torch.Tensor, targets: torch.Tensor,
                                     weights: Optional[torch.Tensor] = None, *,
                                     reduction: str = "mean", normalize: str = "weights",
                                     label_smoothing: float = 0.0) -> torch.Tensor:
    """The unfused ``F.cross_entropy(…, reduction="none", label_smoothing=ε) * weights`` in
    float64, then the reduction of :func:`coreaug_fast.weighted_cross_entropy`. Differentiable
    w.r.t. ``logits`` and ``weights``; returns float64. No argument checking."""
    ce = F.cross_entropy(logits.double(), targets.long(), reduction="none",
                         label_smoothing=label_smoothing)
    w = torch.ones_like(ce) if weights is None else weights.double()
    losses = ce * w
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    # "count": the rows that carry weight (all N without weights)
    return losses.sum() / (w.sum() if normalize == "weights" else (w > 0).sum().double())
