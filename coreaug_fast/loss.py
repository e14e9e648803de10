"""Per-sample-weighted cross-entropy, fused: the training loss on a weighted coreset.

Training on a coreset ``S`` with weights ``ρ`` minimises ``Σ_{i∈S} ρ_i · CE(x_i, y_i)``
(paper Eq. 12). The usual ``(F.cross_entropy(x, y, reduction="none") * w).sum()`` runs
several kernels and keeps N×C buffers (log-probabilities, the scattered one-hot gradient)
alive; this op reads the logits in the forward, saves one log-sum-exp per row (float64,
so that logits far from 0 keep float32-accurate softmax values), and in the backward
recomputes the softmax and writes the gradient directly:

    loss_i = w_i · CE_i,   CE_i = −Σ_j q_ij log softmax(x_i)_j,
    q_ij = (1 − ε)[j = y_i] + ε / C                      (ε = label_smoothing),
    ∂ loss_i / ∂ x_ij = w_i (softmax(x_i)_j − q_ij),     ∂ loss_i / ∂ w_i = CE_i.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import _checks, _ext

_REDUCTIONS = ("none", "sum", "mean")
_NORMALIZE = ("weights", "count")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_values(targets: torch.Tensor, num_classes: int, weights: Optional[torch.Tensor],
                  given_dtype: Optional[torch.dtype] = None) -> None:
    """Targets in [0, C) and weights finite and >= 0, checked with one host sync.

    A bad target must fail here, in Python: inside a CUDA kernel it could only trap (which
    poisons the CUDA context) or silently produce garbage. Two reductions and one transfer
    keep this cheap next to the loss itself even for small batches. ``weights`` are the
    ones the kernel will read (after the cast to the accumulation dtype, so that float64
    weights that overflow float32 are caught)."""
    if targets.numel() == 0:
        return
    stats = list(torch.aminmax(targets))
    if weights is not None:
        stats += torch.aminmax(weights)  # NaN propagates into both
    if targets.device.type == "cpu":
        values = [v.item() for v in stats]
    else:
        values = torch.stack([v.double() for v in stats]).tolist()
    lo, hi = values[0], values[1]
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"targets has value {int(lo if lo < 0 else hi)}, outside [0, {num_classes})")
    if weights is not None and not (0 <= values[2] and values[3] < math.inf):
        bad = values[2] if not 0 <= values[2] else values[3]
        cast = given_dtype is not None and given_dtype != weights.dtype
        extra = f" (the {given_dtype} weights as {weights.dtype}, the dtype the loss computes in)" if cast else ""
        raise ValueError(f"weights must be finite and >= 0, got {bad}{extra}")


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                           weights: Optional[torch.Tensor] = None, *, reduction: str = "mean",
                           normalize: str = "weights", label_smoothing: float = 0.0,
                           check: bool = True) -> torch.Tensor:
    """Per-sample-weighted cross-entropy ``Σ_i w_i · CE(logits_i, targets_i)``, fused.

    Matches ``F.cross_entropy(logits, targets, reduction="none", label_smoothing=ε) * weights``
    followed by the reduction, with float32 accumulation and one N×C buffer (the gradient).

    Args:
        logits: (N, C) float32, float16, bfloat16 or float64, CPU or CUDA, any strides.
            Half and bfloat16 are accumulated in float32.
        targets: (N,) integer class ids in [0, C) (converted to int64).
        weights: (N,) floating, finite, >= 0, on the device of ``logits``; ``None`` means all
            ones. Differentiable: ``∂ loss_i / ∂ w_i = CE_i`` when ``weights.requires_grad``;
            coreset weights normally do not require grad and are then constants.
        reduction: ``"none"`` (the (N,) weighted per-sample losses), ``"sum"`` or ``"mean"``.
        normalize: for ``"mean"`` only: ``"weights"`` divides the sum by ``Σ w_i`` (the
            weighted average, ``F.cross_entropy``'s convention for class weights), ``"count"``
            by N.
        label_smoothing: ε in [0, 1] (a Python or NumPy real), exactly as
            ``F.cross_entropy``'s: the target becomes ``(1 − ε)·onehot + ε/C``.
        check: check the values of ``targets`` and ``weights`` (one host synchronisation
            on CUDA). ``False`` skips that read, for a training step with no host sync:
            then, on CUDA, a target outside [0, C) makes its row's loss and gradient NaN
            (the kernels never read out of bounds); the CPU op still raises RuntimeError.
            Bad weights propagate as they would in the unfused expression. Shapes, dtypes
            and devices are always checked (no sync).

    Returns:
        float32 (float64 for float64 logits) on the device of ``logits``: shape (N,) for
        ``"none"``, else a scalar. With N = 0: an empty (0,) tensor, 0 for ``"sum"`` and NaN
        for ``"mean"`` (0/0, as ``F.cross_entropy``); likewise NaN for ``"mean"`` with
        ``normalize="weights"`` when all weights are 0.

    Gradients flow to ``logits`` (and to ``weights`` if they require grad); the backward is a
    single fused op. Under ``backward(create_graph=True)`` the gradient is instead built from
    differentiable torch ops (unfused, two more N×C buffers), so higher derivatives are exact.

    Raises:
        ValueError: wrong shapes or dtypes, targets outside [0, C), negative / NaN / inf
            weights, tensors on different devices, unknown ``reduction`` / ``normalize``,
            ``label_smoothing`` outside [0, 1]; float64 weights that overflow float32. All are
            checked before any kernel runs (one host synchronisation for the value checks,
            none with ``check=False``).
        ExtensionNotBuiltError: the compiled extension is missing.
    """
    _checks.check_tensor("logits", logits, dim=2, floating=True)
    _checks.check_tensor("targets", targets, dim=1, integer=True)
    if weights is not None:
        _checks.check_tensor("weights", weights, dim=1, floating=True)
    _checks.check_same_device(logits=logits, targets=targets, weights=weights)
    _checks.check_rows(logits.shape[0], targets=targets, weights=weights)
    _checks.check_choice("reduction", reduction, _REDUCTIONS)
    _checks.check_choice("normalize", normalize, _NORMALIZE)
    try:  # Python or NumPy reals, 0-d tensors
        eps = _checks.check_float("label_smoothing", label_smoothing)
    except ValueError:
        eps = math.nan
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    n = logits.shape[0]
    if n > 0 and logits.shape[1] == 0:
        raise ValueError(f"logits must have at least one class column, got shape {tuple(logits.shape)}")
    acc = _acc_dtype(logits.dtype)
    w = None if weights is None else weights.to(acc)
    if check:
        _check_values(targets, logits.shape[1], w, None if weights is None else weights.dtype)
    _ext.require_extension("weighted_cross_entropy")

    losses, _ = torch.ops.coreaug.weighted_cross_entropy(logits, targets.long(), w, eps)
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    if normalize == "count" or w is None:
        return total / n
    return total / w.sum()


# Autograd is registered in C++ (csrc/weighted_ce_autograd.cpp): a Python registration
# would cost more per call than the fused kernels at training batch sizes.
if _ext.available():

    @torch.library.register_fake("coreaug::weighted_cross_entropy")
    def _(logits, targets, weights, label_smoothing):
        torch._check(logits.dim() == 2, lambda: "logits must be 2-D")
        torch._check(targets.dim() == 1, lambda: "targets must be 1-D")
        torch._check(logits.shape[0] == targets.shape[0], lambda: "logits and targets differ in rows")
        if weights is not None:
            torch._check(weights.shape == targets.shape, lambda: "weights and targets differ in shape")
        n = logits.shape[0]
        return (logits.new_empty((n,), dtype=_acc_dtype(logits.dtype)),
                logits.new_empty((n,), dtype=torch.float64))

    @torch.library.register_fake("coreaug::weighted_cross_entropy_backward")
    def _(grad_loss, logits, targets, weights, lse, label_smoothing):
        torch._check(logits.dim() == 2, lambda: "logits must be 2-D")
        torch._check(grad_loss.shape == targets.shape, lambda: "grad_loss and targets differ in shape")
        torch._check(lse.shape == targets.shape, lambda: "lse and targets differ in shape")
        return logits.new_empty(logits.shape)
