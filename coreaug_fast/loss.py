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

The op's bodies are ``csrc/weighted_cross_entropy_{cpu.cpp,cuda.cu,autograd.cpp}``; this
module keeps the short name ``loss`` because ``coreaug_fast.weighted_cross_entropy`` is the
function: a module of that name would be shadowed by it (``import
coreaug_fast.weighted_cross_entropy as m`` would bind the function).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import checks, _ext
from .vocabulary import LOSS_NORMALIZATIONS

_REDUCTIONS = ("none", "sum", "mean")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_values(targets: torch.Tensor, num_classes: int, weights: Optional[torch.Tensor],
                  given: Optional[torch.Tensor] = None, summed: bool = True) -> None:
    """Targets in [0, C); weights finite, >= 0, with a finite sum, and none lost to the cast;
    checked with one host sync.

    A bad target must fail here, in Python: inside a CUDA kernel it could only trap (which
    poisons the CUDA context) or silently produce garbage. A few reductions and one transfer
    keep this cheap next to the loss itself even for small batches. ``weights`` are the ones
    the kernel will read (after the cast to the accumulation dtype, so that float64 weights
    that overflow float32 are caught); ``given`` the caller's, when the cast changed them.
    Weights whose sum overflows make the "weights" mean inf / inf = NaN and the sum inf, and
    nonzero weights that the cast flushes to 0 (float64 1e-320 in float32) make it 0 / 0:
    both are refused rather than returned when the rows are ``summed`` (not for
    ``reduction="none"``, whose per-row losses are what the unfused expression gives)."""
    if targets.numel() == 0:
        return
    stats = list(torch.aminmax(targets))
    if weights is not None:
        stats += list(torch.aminmax(weights))  # NaN propagates into both
        if summed:
            stats.append(weights.sum())
            if given is not None:
                stats.append(((given != 0) & (weights == 0)).any())
    if targets.device.type == "cpu":
        values = [v.item() for v in stats]
    else:
        values = torch.stack([v.double() for v in stats]).tolist()
    lo, hi = values[0], values[1]
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"targets has value {int(lo if lo < 0 else hi)}, outside [0, {num_classes})")
    if weights is None:
        return
    cast = f" (the {given.dtype} weights as {weights.dtype}, the dtype the loss computes in)" if given is not None else ""
    if not (0 <= values[2] and values[3] < math.inf):
        bad = values[2] if not 0 <= values[2] else values[3]
        raise ValueError(f"weights must be finite and >= 0, got {bad}{cast}")
    if not summed:
        return
    if values[4] == math.inf:
        raise ValueError(f"weights sum to inf in {weights.dtype}, the dtype the loss computes in (largest "
                         f"{values[3]:.3g}); scale them down: the 'weights' mean does not change")
    if given is not None and values[5]:
        raise ValueError(f"weights has nonzero {given.dtype} values that are 0 as {weights.dtype}, the dtype "
                         f"the loss computes in; scale them up: the 'weights' mean does not change")


def mean_divisor(weights: torch.Tensor, normalize: str) -> torch.Tensor:
    """What the ``"mean"`` reduction divides ``Σ w·CE`` by, for per-row ``weights`` (N,):
    ``Σ w`` (``normalize="weights"``) or the number of rows with ``w > 0`` (``"count"``: a
    row of weight 0, such as the padding of a data-parallel epoch, is not a sample). A 0-d
    tensor of the weights' dtype, on their device, computed without a host sync.

    The one definition of the batch loss: data-parallel training (``train/ddp.py``) sums this
    over the ranks, so one process and W ranks divide the same batch by the same number."""
    if normalize == "weights":
        return weights.sum()
    return (weights > 0).sum().to(weights.dtype)


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
            by the number of rows with ``w_i > 0`` (N when ``weights`` is None or has no
            zeros; a row of weight 0 counts as absent, as the padding rows of data-parallel
            training do): :func:`mean_divisor`, which data-parallel training uses too.
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
        for ``"mean"`` (0/0, as ``F.cross_entropy``); likewise NaN for ``"mean"`` when all
        weights are 0.

    Range: the loss is computed in float32 (float64 for float64 logits). Weights whose sum
    overflows that dtype, and float64 weights that the cast to float32 turns into 0, are
    errors (with ``check``); a single weighted loss ``w_i·CE_i`` beyond the dtype's range
    (3.4e38 in float32) is inf, as in the unfused expression. The ``"weights"`` mean does not
    change when all weights are scaled by one factor, so scale them into range.

    Gradients flow to ``logits`` (and to ``weights`` if they require grad); the backward is a
    single fused op. Under ``backward(create_graph=True)`` the gradient is instead built from
    differentiable torch ops (unfused, two more N×C buffers), so higher derivatives are exact.

    Raises:
        ValueError: wrong shapes or dtypes, targets outside [0, C), negative / NaN / inf
            weights, weights whose sum overflows, tensors on different devices (or, with
            ``check``, on the meta device), unknown ``reduction`` / ``normalize``,
            ``label_smoothing`` outside [0, 1]; float64 weights that overflow float32 or
            underflow to 0 in it. All are checked before any kernel runs (one host
            synchronisation for the value checks, none with ``check=False``).
        ExtensionNotBuiltError: the compiled extension is missing.
    """
    checks.check_tensor("logits", logits, dim=2, floating=True)
    checks.check_tensor("targets", targets, dim=1, integer=True)
    if weights is not None:
        checks.check_tensor("weights", weights, dim=1, floating=True)
    checks.check_same_device(logits=logits, targets=targets, weights=weights)
    checks.check_rows(logits.shape[0], targets=targets, weights=weights)
    checks.check_choice("reduction", reduction, _REDUCTIONS)
    checks.check_choice("normalize", normalize, LOSS_NORMALIZATIONS)
    try:  # Python or NumPy reals, 0-d tensors
        eps = checks.check_float("label_smoothing", label_smoothing)
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
        checks.check_not_meta(logits=logits, targets=targets, weights=weights)
        # only a narrowing cast (float64 -> float32) can flush or overflow the caller's weights
        narrowed = weights is not None and weights.dtype.itemsize > acc.itemsize
        _check_values(targets, logits.shape[1], w, weights if narrowed else None, summed=reduction != "none")
    _ext.require_extension("weighted_cross_entropy")

    losses, _ = torch.ops.coreaug.weighted_cross_entropy(logits, targets.long(), w, eps)
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    if w is None:
        return total / n
    return total / mean_divisor(w, normalize)


# Autograd is registered in C++ (csrc/weighted_cross_entropy_autograd.cpp): a Python registration
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
