"""Which rows one epoch trains on, and with what weight.

An epoch is a list of rows; each row is a dataset index, whether it is a strong
(augmented) copy or the weakly augmented original, and its loss weight:

* ``none``: every example once, weight 1.
* ``full``: every example once, plus ``copies`` strong copies of every example, weight 1.
* ``random`` / ``max-loss`` / ``coreset``: every example once (weight 1), plus ``copies``
  strong copies of each selected example j with weight rho_j = w_j / r, where w_j is the
  selector's weight (gamma_j for the coreset, 1 for the baselines) -- paper Alg. 1;
  ``--subset-weights`` may rescale w first.
* ``--subset-only`` (paper Sec. 5.2): the originals are the selected examples alone, with
  weight w_j (the weighted coreset), and the copies as above.
* ``--aug-mode inplace`` (paper App. D.6): an example's strong copies replace its weak row
  instead of being appended to it.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class EpochRows(NamedTuple):
    index: torch.Tensor   # int64 (E,), dataset row
    strong: torch.Tensor  # bool (E,), strong copy (True) or weakly augmented original
    weight: torch.Tensor  # float32 (E,), loss weight


def epoch_rows(n: int, method: str, *, subset: Optional[torch.Tensor] = None,
               subset_weights: Optional[torch.Tensor] = None, copies: int = 4,
               aug_mode: str = "append", subset_only: bool = False) -> EpochRows:
    """The rows of one epoch over a training set of ``n`` examples (CPU tensors).

    ``subset`` (int64, (k,)) and ``subset_weights`` (float, (k,)) are the current selection,
    required for the subset methods; ``full`` uses every example with weight 1.
    """
    if method == "none":
        return EpochRows(torch.arange(n), torch.zeros(n, dtype=torch.bool), torch.ones(n))
    if method == "full":
        subset, subset_weights = torch.arange(n), torch.full((n,), float(copies))
    elif subset is None or subset_weights is None:
        raise ValueError(f"method {method!r} needs the selected subset and its weights")
    subset, subset_weights = subset.cpu().long(), subset_weights.cpu().float()

    if subset_only:
        weak_idx, weak_w = subset, subset_weights
    else:
        weak_idx, weak_w = torch.arange(n), torch.ones(n)
    if aug_mode == "inplace" and copies > 0:
        replaced = torch.zeros(n, dtype=torch.bool)
        replaced[subset] = True
        keep = ~replaced[weak_idx]
        weak_idx, weak_w = weak_idx[keep], weak_w[keep]

    strong_idx = subset.repeat(copies)
    strong_w = (subset_weights / max(copies, 1)).repeat(copies)
    return EpochRows(
        torch.cat([weak_idx, strong_idx]),
        torch.cat([torch.zeros(weak_idx.numel(), dtype=torch.bool), torch.ones(strong_idx.numel(), dtype=torch.bool)]),
        torch.cat([weak_w, strong_w]).float(),
    )
