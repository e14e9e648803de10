"""PNG figures of a :class:`~coreaug_fast.analysis.JacobianSpectrum`: the singular-value
histogram of the paper's Fig. 2 and the two per-bin curves of App. C, Fig. 1.

Figures are drawn on ``matplotlib.figure.Figure`` objects, not pyplot, so the caller's
backend and open figures are left alone. matplotlib is an optional dependency
(``pip install coreaug_fast[plot]``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .spectrum import JacobianSpectrum


def _figure(**kw):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'coreaug_fast[plot]' "
                          "(or pass --no-plots on the command line)") from exc
    return Figure(**kw)


def _positive(spectrum) -> torch.Tensor:
    # values below the numerical rank are rounding noise and have no place on a log axis
    return spectrum.singular_values[:spectrum.rank]


def plot_histogram(result: JacobianSpectrum, path, num_hist_bins: int = 50, title: Optional[str] = None) -> None:
    """Fig. 2: overlaid histograms of the original and augmented singular values, on
    log-spaced bins (the spectrum spans orders of magnitude). Singular values below each
    Jacobian's numerical rank are left out; the legend says how many."""
    fig = _figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    spectra = [("original", result.original, "tab:blue")]
    if result.augmented is not None:
        spectra.append(("augmented", result.augmented, "tab:orange"))
    values = torch.cat([_positive(s) for _, s, _ in spectra])
    if values.numel():
        lo, hi = math.log10(float(values.min())), math.log10(float(values.max()))
        edges = torch.logspace(lo, hi if hi > lo else lo + 1, num_hist_bins + 1, dtype=torch.float64)
        for name, s, color in spectra:
            dropped = s.singular_values.numel() - s.rank
            label = name + (f" ({dropped} below rank omitted)" if dropped else "")
            ax.hist(_positive(s).numpy(), bins=edges.numpy(), alpha=0.5, color=color, label=label)
        ax.set_xscale("log")
        ax.legend()
    ax.set_xlabel("singular value of the Jacobian")
    ax.set_ylabel("count")
    ax.set_title(title or f"Jacobian spectrum ({result.num_rows} rows × {result.num_params} parameters)")
    fig.savefig(path, dpi=120)


def plot_bins(result: JacobianSpectrum, path, title: Optional[str] = None) -> None:
    """App. C, Fig. 1: per bin (smallest singular values on the left), the mean difference
    augmented − original of the singular values, and the mean principal angle (degrees)
    between the bin's original and augmented singular subspaces. Bins holding singular
    values below either Jacobian's numerical rank are shaded grey."""
    m = result.measures
    if m is None:
        raise ValueError("the result has no measures: run jacobian_spectrum with augment=...")
    panels = 2 if m.angle is not None else 1
    fig = _figure(figsize=(5 * panels + 1, 4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    x = torch.arange(m.num_bins).numpy()
    # bins holding values below either Jacobian's numerical rank compare noise, not signal
    r = result.original.singular_values.numel()
    below = r - min(result.original.rank, result.augmented.rank)
    noisy = [k for k in range(m.num_bins) if int(m.bounds[k]) < below]
    for ax in axes:
        for k in noisy:
            ax.axvspan(k - 0.5, k + 0.5, color="0.85", zorder=0, linewidth=0,
                       label="below numerical rank" if k == noisy[0] else None)
    axes[0].bar(x, m.value_diff.numpy(), color=["tab:green" if v >= 0 else "tab:red" for v in m.value_diff.tolist()])
    axes[0].axhline(0.0, color="black", linewidth=0.8)
    axes[0].set_xlabel("bin (smallest singular values first)")
    axes[0].set_ylabel("mean σ(augmented) − mean σ(original)")
    axes[0].set_title("singular values")
    if noisy:
        axes[0].legend(loc="best")
    if m.angle is not None:
        axes[1].plot(x, torch.rad2deg(m.angle).numpy(), marker="o")
        axes[1].set_xlabel("bin (smallest singular values first)")
        axes[1].set_ylabel("mean principal angle (degrees)")
        axes[1].set_title("singular vectors")
        axes[1].set_ylim(bottom=0)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
