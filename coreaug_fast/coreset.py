"""What every selector returns: :class:`Coreset`, a weighted subset chosen per class.

A data type and nothing else (torch and the standard library only), so that the selectors
(:mod:`coreaug_fast.selection`) and the plain-PyTorch twin that judges them
(:mod:`coreaug_fast.reference.facility_location`) return the same type without the twin
importing any code of the path it checks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Coreset:
    """A weighted subset, chosen per class.

    Attributes:
        indices: (k,) int64, the chosen examples grouped by class (ascending class id), each
            class in selection order. Row positions of the input, or the values of the
            ``indices=`` argument when one was given.
        weights: (k,) float32, γ_j: how many rows of its class each chosen example
            represents (they sum to n_c within a class). 1 for the baselines.
        gains: (k,) float32, the marginal gain F(e | S) at each greedy step (the scale is
            in :mod:`coreaug_fast.selection.facility_location`); for
            :func:`~coreaug_fast.select_max_loss` the losses, for
            :func:`~coreaug_fast.select_random` zeros.
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
