"""The two measures of App. C.1: per-bin change of the singular values, and per-bin
principal angles between the singular subspaces of the original and augmented Jacobian.

The singular values of the two Jacobians cannot be matched one to one, so both spectra
are sorted and cut into ``num_bins`` bins holding the same number of values (the first
``r mod num_bins`` bins hold one more). Bin ``k`` of the original spectrum is compared with
bin ``k`` of the augmented one. Bins are numbered from the smallest singular values
(bin 0) to the largest (bin ``num_bins − 1``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch


@dataclass(frozen=True)
class BinnedMeasures:
    """Per-bin comparison of an original and an augmented spectrum (all on the CPU).

    Attributes:
        bounds: (num_bins + 1,) int64. Bin ``k`` holds positions ``bounds[k]:bounds[k+1]``
            of the spectrum sorted in ascending order.
        original_mean: (num_bins,) float64, mean original singular value in each bin.
        augmented_mean: (num_bins,) float64, mean augmented singular value in each bin.
        value_diff: (num_bins,) float64, ``augmented_mean − original_mean``.
        angle: (num_bins,) float64 in radians, the mean principal angle between the
            subspaces spanned by the bin's original and augmented singular vectors, or
            ``None`` when no vectors were given.
    """

    bounds: torch.Tensor
    original_mean: torch.Tensor
    augmented_mean: torch.Tensor
    value_diff: torch.Tensor
    angle: Optional[torch.Tensor]

    @property
    def num_bins(self) -> int:
        return self.value_diff.shape[0]

    def to_dict(self) -> dict:
        out = {
            "num_bins": self.num_bins,
            "bounds": self.bounds.tolist(),
            "original_mean": self.original_mean.tolist(),
            "augmented_mean": self.augmented_mean.tolist(),
            "value_diff": self.value_diff.tolist(),
            "angle_rad": None if self.angle is None else self.angle.tolist(),
            "angle_deg": None if self.angle is None else torch.rad2deg(self.angle).tolist(),
        }
        return out


def _as_float64(name: str, x, dim: int) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")
    if not (x.is_floating_point() and not x.is_complex()):
        raise ValueError(f"{name} must be real floating point, got {x.dtype}")
    x = x.detach().to(torch.float64)
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def bin_bounds(r: int, num_bins: int) -> torch.Tensor:
    """(num_bins + 1,) int64 boundaries of ``num_bins`` equal-count bins over ``r`` sorted
    values; the first ``r mod num_bins`` bins hold one value more (as numpy.array_split)."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
    if num_bins > r:
        raise ValueError(f"num_bins={num_bins} exceeds the number of singular values ({r}); "
                         "use fewer bins or more examples")
    base, extra = divmod(r, num_bins)
    sizes = torch.full((num_bins,), base, dtype=torch.int64)
    sizes[:extra] += 1
    return torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles between ``span(a)`` and ``span(b)``, in radians, ascending.

    Args:
        a: (m, k) with orthonormal columns (``aᵀa = I``), any floating dtype and device.
        b: (m, l) with orthonormal columns, same device.

    Returns:
        (min(k, l),) float64 on ``a``'s device, in [0, π/2].

    The cosines are the singular values of ``aᵀb``; below 45° the angles are taken from the
    sines, the singular values of ``b − a(aᵀb)`` (the part of ``b`` outside ``span(a)``),
    because ``arccos`` near 1 loses every digit of a small angle.
    """
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    if a.shape[1] < b.shape[1]:  # the sine formula needs the wider basis projected out
        a, b = b, a
    ab = a.T @ b
    cos = torch.linalg.svdvals(ab).clamp(0.0, 1.0)                 # descending
    sin = torch.linalg.svdvals(b - a @ ab).clamp(0.0, 1.0).flip(0)  # ascending
    # both lists are sorted by angle ascending, so they pair up element by element
    return torch.where(cos * cos >= 0.5, torch.arcsin(sin), torch.arccos(cos))


def binned_measures(original_values, augmented_values, original_vectors=None,
                    augmented_vectors=None, num_bins: int = 30) -> BinnedMeasures:
    """The App. C.1 measures for one pair of spectra.

    Args:
        original_values: (r,) singular values of the original Jacobian, any order
            (torch tensor or numpy array, real floating point).
        augmented_values: (r,) singular values of the augmented Jacobian.
        original_vectors: optional (m, r), column ``j`` the singular vector of
            ``original_values[j]``; columns orthonormal.
        augmented_vectors: optional (m, r), likewise for the augmented Jacobian. Give both
            vectors or neither.
        num_bins: number of equal-count bins, 1 ≤ num_bins ≤ r (the paper uses 30).

    Returns:
        :class:`BinnedMeasures`, float64 on the CPU. Values and vectors are sorted by
        ascending singular value before binning, so bin 0 holds the smallest.

    Raises:
        ValueError: mismatched lengths or shapes, only one of the vectors, non-finite input,
            bad ``num_bins``.
    """
    s0 = _as_float64("original_values", original_values, 1)
    s1 = _as_float64("augmented_values", augmented_values, 1)
    if s0.shape != s1.shape:
        raise ValueError(f"original_values has {s0.shape[0]} values but augmented_values has {s1.shape[0]}")
    if (original_vectors is None) != (augmented_vectors is None):
        raise ValueError("give both original_vectors and augmented_vectors, or neither")
    r = s0.shape[0]
    bounds = bin_bounds(r, num_bins)
    o0, o1 = torch.argsort(s0.cpu()), torch.argsort(s1.cpu())
    s0, s1 = s0.cpu()[o0], s1.cpu()[o1]
    ids = torch.repeat_interleave(torch.arange(num_bins), bounds.diff())
    counts = bounds.diff().to(torch.float64)
    mean0 = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, ids, s0) / counts
    mean1 = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, ids, s1) / counts

    angle = None
    if original_vectors is not None:
        u0 = _as_float64("original_vectors", original_vectors, 2)
        u1 = _as_float64("augmented_vectors", augmented_vectors, 2)
        if u0.shape != u1.shape or u0.shape[1] != r:
            raise ValueError(f"original_vectors {tuple(u0.shape)} and augmented_vectors {tuple(u1.shape)} "
                             f"must both be (m, {r}), one column per singular value")
        if u0.device != u1.device:
            raise ValueError(f"original_vectors on {u0.device} but augmented_vectors on {u1.device}")
        u0, u1 = u0[:, o0.to(u0.device)], u1[:, o1.to(u1.device)]
        angle = torch.stack([
            principal_angles(u0[:, lo:hi], u1[:, lo:hi]).mean()
            for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist())
        ]).cpu()
    return BinnedMeasures(bounds, mean0, mean1, mean1 - mean0, angle)
