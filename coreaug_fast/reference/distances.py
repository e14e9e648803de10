from __future__ import annotations

import torch


def pairwise_distances_reference(x, y=None, *, squared: bool = False) -> torch.Tensor:
    """(m, n) float64 Euclidean distances between the rows of ``x`` and ``y`` (default ``x``).

    ``x``/``y`` are (·, D) tensors or ``(grad, features)`` pairs such as
    :class:`~coreaug_fast.FactoredEmbeddings`, which are materialised here (row i =
    grad[i] ⊗ features[i]; fine for test sizes only).
    """
    def dense(e):
        if isinstance(e, tuple):
            a, h = e
            e = torch.einsum("nc,nd->ncd", a, h).reshape(a.shape[0], -1)
        return e.double()

    xd = dense(x)
    yd = xd if y is None else dense(y)
    d = torch.cdist(xd, yd)
    return d * d if squared else d
