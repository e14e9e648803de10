from __future__ import annotations

import torch


def pairwise_distances_reference(x, y=None, *, squared: bool = False) -> torch.Tensor:
    """(m, n) float64 Euclidean distances between the rows of ``x`` and ``y`` (default ``x``).

    ``x``/``y`` are (·, D) tensors or :class:`~coreaug_fast.FactoredEmbeddings`, which are
    materialised here (fine for test sizes only).
    """
    from ..embeddings import FactoredEmbeddings

    def dense(e):
        return (e.materialize() if isinstance(e, FactoredEmbeddings) else e).double()

    xd = dense(x)
    yd = xd if y is None else dense(y)
    d = torch.cdist(xd, yd)
    return d * d if squared else d
