"""Last-layer gradient embeddings: the space in which the coreset is chosen.

For cross-entropy, the gradient of example i's loss w.r.t. its logits is
``p_i - y_i`` (softmax minus one-hot), and w.r.t. the last linear layer's weight it is
the outer product ``(p_i - y_i) ⊗ h_i`` with the penultimate features ``h_i``. The
outer product is kept factored (:class:`FactoredEmbeddings`) and never materialised;
the distance kernels use
``‖a_i⊗h_i − a_j⊗h_j‖² = ‖a_i‖²‖h_i‖² + ‖a_j‖²‖h_j‖² − 2 (a_i·a_j)(h_i·h_j)``.

At ImageNet scale the (n, C) embeddings are as large as the logits (5.2 GB in float32 for
1.3M rows and 1,000 classes). ``gradient_embeddings(..., lazy=True)`` returns
:class:`LazyEmbeddings`, which keeps only references to the logits (and features);
:func:`~coreaug_fast.select_coreset` computes the rows a few classes at a time, with the
same op, so the picks are those of the materialised embeddings bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

import torch

from .. import checks, _ext


class FactoredEmbeddings(NamedTuple):
    """The last-layer weight gradients ``(p − y) ⊗ h`` kept as their two factors.

    Attributes:
        grad: (n, C) float32, ``softmax(logits) − onehot(targets)``.
        features: (n, d) float32, the penultimate features ``h``.
    """

    grad: torch.Tensor
    features: torch.Tensor

    def materialize(self) -> torch.Tensor:
        """The (n, C·d) float32 outer products, row i = ``grad[i] ⊗ features[i]``
        flattened row-major. For tests and small inputs only."""
        return torch.einsum("nc,nd->ncd", self.grad, self.features).reshape(self.grad.shape[0], -1)


Embeddings = Union[torch.Tensor, FactoredEmbeddings]


@dataclass(frozen=True, eq=False)
class LazyEmbeddings:
    """The embeddings ``softmax(logits) − onehot(targets)`` (⊗ ``features``), not yet
    computed: what ``gradient_embeddings(..., lazy=True)`` returns and
    :func:`~coreaug_fast.select_coreset` consumes a few classes at a time. It holds
    references, not copies: the caller's buffers must not change before the selection.

    Attributes:
        logits: (n, C) floating (float32, float16, bfloat16 or float64), detached.
        targets: (n,) int64 class ids in [0, C), on the device of ``logits``.
        features: (n, d) floating penultimate features, detached, or None.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    features: Optional[torch.Tensor] = None

    @property
    def shape(self) -> torch.Size:
        """(n, C): the shape of the grad factor (of the embeddings themselves without features)."""
        return self.logits.shape

    @property
    def device(self) -> torch.device:
        return self.logits.device

    def grad_rows(self, index: torch.Tensor) -> torch.Tensor:
        """(len(index), C) float32 ``softmax − onehot`` of the rows ``index`` (int64, on the
        device of ``logits``): row for row the bits :meth:`materialize` gives, since the op
        computes every row on its own."""
        return torch.ops.coreaug.gradient_embeddings(self.logits[index], self.targets[index])

    def materialize(self) -> Embeddings:
        """What ``gradient_embeddings(logits, targets, features)`` returns: (n, C) float32,
        or :class:`FactoredEmbeddings` with features."""
        grad = torch.ops.coreaug.gradient_embeddings(self.logits, self.targets)
        if self.features is None:
            return grad
        return FactoredEmbeddings(grad, self.features.float().contiguous())


def gradient_embeddings(logits: torch.Tensor, targets: torch.Tensor,
                        features: Optional[torch.Tensor] = None, *,
                        lazy: bool = False) -> Union[Embeddings, LazyEmbeddings]:
    """Per-example gradient of the cross-entropy loss w.r.t. the logits.

    Args:
        logits: (n, C) float32, float16, bfloat16 or float64, any device, any strides.
            Gradients are not tracked (the embedding is a detached summary).
        targets: (n,) integer class ids in [0, C).
        features: optional (n, d) floating penultimate features on the same device.
        lazy: return a :class:`LazyEmbeddings` that computes nothing yet; pass it to
            :func:`~coreaug_fast.select_coreset`, which then holds the embeddings of a few
            classes at a time instead of all n rows (same picks, bit for bit).

    Returns:
        Without ``features``: (n, C) float32 ``softmax(logits) − onehot(targets)``, on the
        device of ``logits``. With ``features``: a :class:`FactoredEmbeddings`
        ``(grad, features)`` representing the (n, C·d) last-layer weight gradients. With
        ``lazy``: a :class:`LazyEmbeddings` standing for either.

    Raises:
        ValueError: wrong shapes or dtypes, targets outside [0, C), NaN or inf in ``logits``
            or ``features``, tensors on different devices or on the meta device.
        ExtensionNotBuiltError: the compiled extension is missing.
    """
    if not isinstance(lazy, bool):  # before the checks that read every value
        raise ValueError(f"lazy must be True or False, got {lazy!r}")
    checks.check_tensor("logits", logits, dim=2, floating=True)
    checks.check_tensor("targets", targets, dim=1, integer=True)
    if features is not None:  # its type before any device check reads .device
        checks.check_tensor("features", features, dim=2, floating=True)
    checks.check_same_device(logits=logits, targets=targets, features=features)
    checks.check_rows(logits.shape[0], targets=targets)
    if features is not None:
        checks.check_rows(logits.shape[0], features=features)
    checks.check_not_meta(logits=logits, targets=targets, features=features)
    checks.check_range("targets", targets, 0, logits.shape[1])
    # NaN or inf here would come out as NaN rows, which the selection would then refuse as
    # "embeddings contains NaN": say which input it was.
    checks.check_finite("logits", logits)
    if features is not None:
        checks.check_finite("features", features)
    _ext.require_extension("gradient_embeddings")
    if lazy:
        return LazyEmbeddings(logits.detach(), targets.detach().long(),
                              None if features is None else features.detach())
    grad = torch.ops.coreaug.gradient_embeddings(logits.detach(), targets.detach().long())
    if features is None:
        return grad
    return FactoredEmbeddings(grad, features.detach().float().contiguous())


if _ext.available():

    @torch.library.register_fake("coreaug::gradient_embeddings")
    def _(logits, targets):
        torch._check(logits.dim() == 2, lambda: "logits must be 2-D")
        torch._check(targets.dim() == 1, lambda: "targets must be 1-D")
        torch._check(logits.shape[0] == targets.shape[0], lambda: "logits and targets differ in rows")
        return logits.new_empty(logits.shape, dtype=torch.float32)
