from __future__ import annotations

import torch


def gradient_embeddings_reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(n, C) float64 ``softmax(logits) − onehot(targets)``, computed in float64."""
    p = torch.softmax(logits.detach().double(), dim=1)
    return p - torch.nn.functional.one_hot(targets.long(), logits.shape[1]).double()
