"""One selection step: a clean eval-mode forward pass over the training set gives the
logits (and features), from which max-loss takes the losses and the coreset the gradient
embeddings; the subset is chosen per class."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from . import _api
from .batches import BatchMaker
from .timing import Clock


class Selected(NamedTuple):
    indices: torch.Tensor          # int64 (k,), CPU
    weights: torch.Tensor          # float32 (k,), CPU: gamma for coreset, 1 for the baselines
    maxloss_intersection: Optional[float]  # |S ∩ max-loss subset of the same size| / |S|
    selection_s: float             # forward pass (when the method needs it) + selection
    metrics_s: float               # extra work only for the intersection figure


@torch.no_grad()
def clean_forward(model, bm: BatchMaker, batch_size: int, amp: bool = False, index=None):
    """Logits (n, classes) and penultimate features (n, d), float32, of every training
    image (or of rows ``index``) without augmentation, model in eval mode (BatchNorm uses
    running statistics)."""
    was_training = model.training
    model.eval()
    logits, feats = [], []
    x_all = bm.ds.train_x if index is None else bm.ds.train_x[index]
    with torch.autocast(x_all.device.type, dtype=torch.bfloat16, enabled=amp):
        for part in x_all.split(max(batch_size, 1024)):
            h = model.embed(bm.clean(part))
            logits.append(model.head(h).float())
            feats.append(h.float())
    model.train(was_training)
    return torch.cat(logits), torch.cat(feats)


def select(method: str, model, bm: BatchMaker, *, fraction: float, embedding: str,
           generator: torch.Generator, batch_size: int, amp: bool = False) -> Selected:
    """Choose this round's subset for ``method`` in ``("random", "max-loss", "coreset")``."""
    labels = bm.ds.train_y
    clock = Clock(labels.device)
    if method == "random":  # needs no forward pass; the one below only feeds the figure
        chosen = _api.select_random(labels, fraction, generator=generator)
        selection_s = clock.lap()
    logits, feats = clean_forward(model, bm, batch_size, amp)
    losses = F.cross_entropy(logits, labels, reduction="none")
    if method == "max-loss":
        chosen = _api.select_max_loss(losses, labels, fraction)
    elif method == "coreset":
        emb = _api.gradient_embeddings(logits, labels, feats if embedding == "last-layer-features" else None)
        chosen = _api.select_coreset(emb, labels, fraction)
    if method != "random":
        selection_s = clock.lap()
    indices = chosen.indices.cpu().long()
    top = indices if method == "max-loss" else _api.select_max_loss(losses, labels, fraction).indices.cpu()
    inter = _overlap(indices, top)
    return Selected(indices, chosen.weights.cpu().float(), inter, selection_s, clock.lap())


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return float(torch.isin(a, b).sum()) / a.numel()
