"""Singular spectrum of the network Jacobian for original and augmented images (paper
Sec. 3, Fig. 2, App. C).

Which Jacobian. The paper trains ``f(W, x)`` with the squared loss ``½ Σᵢ ‖f(W, xᵢ) − yᵢ‖²``
(Eq. 2), whose gradient is ``Jᵀ r`` with ``J = ∂f/∂W`` and ``r`` the stacked residuals (Eq.
3); the NTK is ``Θ = J Jᵀ`` (Eq. 5), and Sec. 3.2 studies its eigenvectors, i.e. the left
singular vectors of ``J``. With a vector output (C logits) the residual has one entry per
(example, class), so by default ``J`` has ``n·C`` rows, row ``i·C + c`` the gradient of logit
``c`` of example ``i`` w.r.t. all trainable parameters (P columns, in
``model.named_parameters()`` order). ``output="target"`` keeps only the logit of each
example's labelled class (``n`` rows), the scalar-output reading of the paper's
``J ∈ ℝ^{n×m}``.

How it is computed. One example at a time (``torch.func.vmap`` over ``jacrev`` of a
``functional_call``), ``chunk_size`` examples per call, written into one preallocated
``(rows, P)`` matrix in the model's dtype. Reverse mode costs one backward pass per output
row, so C backward passes per example (one with ``output="target"``), independent of P.
The model runs in eval mode (batch-norm statistics and dropout would otherwise couple or
randomise the rows) and is returned to its former mode.

Memory. Per chunk, about ``chunk_size · C · (P + A)`` elements, A being the activations one
example keeps for its backward pass; the stored Jacobian ``rows · P`` elements (one at a
time: the original one is freed before the augmented one is built); the decomposition
``rows²`` float64 (Gram route) or ``rows · P`` float64 (SVD route); the left singular vectors
``rows · r`` float64 for each spectrum. For the paper's setting (900 images, 10 classes,
ResNet20 with 0.27 M parameters) the Jacobian is 9 GiB in float32 and each set of singular
vectors 0.6 GiB.
"""
from __future__ import annotations

import numbers

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch.func import functional_call, jacrev, vmap
from tqdm.auto import tqdm

from .. import checks
from .measures import BinnedMeasures, binned_measures

_OUTPUTS = ("logits", "target")
_METHODS = ("auto", "gram", "svd")


@dataclass(frozen=True)
class Spectrum:
    """Singular values (and left singular vectors) of one Jacobian, on the CPU.

    Attributes:
        singular_values: (r,) float64, descending, ``r = min(rows, P)``.
        left_vectors: (rows, r) float64 with orthonormal columns, column ``j`` the left
            singular vector of ``singular_values[j]`` (an NTK eigenvector); ``None`` when
            vectors were not requested.
        rank: numerical rank, the number of singular values above ``tol``.
        tol: the resolution of the computed values: ``4·eps·‖J‖_F·(1/√rows + 1/√P)``,
            eps that of the Jacobian's dtype (the spectral size of rounding its entries),
            and at least ``2·√eps64·σ_max`` on the Gram route. Values below it are noise and
            their singular vectors an arbitrary basis of a (numerical) null space.
    """

    singular_values: torch.Tensor
    left_vectors: Optional[torch.Tensor]
    rank: int
    tol: float


@dataclass(frozen=True)
class JacobianSpectrum:
    """What :func:`jacobian_spectrum` returns. Tensors are on the CPU.

    Attributes:
        indices: (n,) int64, the rows of ``images`` that were used, ascending.
        output: ``"logits"`` (``rows = n·C``, row ``i·C + c``) or ``"target"`` (``rows = n``).
        num_rows: rows of the Jacobian.
        num_params: P, trainable parameters (its columns).
        num_classes: C, the model's output width.
        original: :class:`Spectrum` of the Jacobian on the original images.
        augmented: :class:`Spectrum` on the augmented images (row ``j`` is the augmented
            version of the original row ``j``), or ``None`` without ``augment``.
        measures: the App. C.1 :class:`~coreaug_fast.analysis.BinnedMeasures` (augmented −
            original), or ``None`` without ``augment``.
    """

    indices: torch.Tensor
    output: str
    num_rows: int
    num_params: int
    num_classes: int
    original: Spectrum
    augmented: Optional[Spectrum]
    measures: Optional[BinnedMeasures]

    def to_dict(self) -> dict:
        """A JSON-serialisable summary: sizes, both spectra (descending), the measures.
        Singular vectors are left out (they are ``rows × r``)."""
        def spec(s: Optional[Spectrum]):
            return None if s is None else {"rank": s.rank, "tol": s.tol, "singular_values": s.singular_values.tolist()}
        return {
            "output": self.output,
            "num_examples": int(self.indices.numel()),
            "num_rows": self.num_rows,
            "num_params": self.num_params,
            "num_classes": self.num_classes,
            "indices": self.indices.tolist(),
            "original": spec(self.original),
            "augmented": spec(self.augmented),
            "measures": None if self.measures is None else self.measures.to_dict(),
        }


def _check_int(name: str, value, low: int) -> int:
    """An integer (Python or NumPy) >= low, as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def subsample(targets: torch.Tensor, max_examples: int, seed: int = 0,
              classes: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The examples :func:`jacobian_spectrum` uses: those whose target is in ``classes``
    (all when ``None``), then, if more than ``max_examples``, a uniform draw without
    replacement, ``torch.randperm(pool, generator=torch.Generator().manual_seed(seed))``'s
    first ``max_examples``. Returns (n,) int64 indices on the CPU, ascending."""
    _check_int("max_examples", max_examples, 1)
    targets = targets.detach().cpu().long()
    if classes is None:
        pool = torch.arange(targets.numel())
    else:
        try:
            classes = list(classes)
        except TypeError:
            raise ValueError(f"classes must be a sequence of integer class ids, got {classes!r}") from None
        # each checked: torch.as_tensor(..., dtype=long) would turn 0.5 into class 0
        classes = [checks.check_int("classes", c) for c in classes]
        wanted = torch.as_tensor(classes, dtype=torch.long)
        missing = [c for c in wanted.tolist() if not bool((targets == c).any())]
        if wanted.numel() == 0 or missing:
            raise ValueError(f"classes {list(classes)!r}: no example has target {missing or '(empty list)'}")
        pool = torch.isin(targets, wanted).nonzero().squeeze(1)
    if pool.numel() > max_examples:
        g = torch.Generator().manual_seed(seed)
        pool = pool[torch.randperm(pool.numel(), generator=g)[:max_examples]].sort().values
    return pool


def _trainable(model: torch.nn.Module):
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    return params, frozen, buffers


def _probe(model: torch.nn.Module, x1: torch.Tensor):
    """(C, dtype) of the model's output on one input; the model must be in eval mode."""
    with torch.no_grad():
        out = model(x1)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must map a batch of b inputs to a (b, C) tensor; one input gave {shape}")
    if not out.is_floating_point():
        raise ValueError(f"model output must be floating point, got {out.dtype}")
    return out.shape[1], out.dtype


def network_jacobian(model: torch.nn.Module, images: torch.Tensor, targets: Optional[torch.Tensor] = None,
                     output: str = "logits", chunk_size: int = 32, progress: bool = False,
                     desc: str = "jacobian") -> torch.Tensor:
    """The Jacobian of the model's outputs w.r.t. its trainable parameters.

    Args:
        model: maps a batch (b, ...) to (b, C) outputs; evaluated in eval mode.
        images: (n, ...) inputs (moved to the model's device).
        targets: (n,) integer classes in [0, C), needed for ``output="target"``.
        output: ``"logits"`` for (n·C, P), row ``i·C + c`` = ∂f_c(xᵢ)/∂W, or ``"target"``
            for (n, P), row ``i`` = ∂f_{targets[i]}(xᵢ)/∂W.
        chunk_size: examples per vmapped call (bounds the working memory, see the module
            docstring); the result does not depend on it.
        progress: show a tqdm bar over chunks.

    Returns:
        (rows, P) tensor in the model output's dtype, on the model's device. Columns follow
        ``model.named_parameters()`` (trainable ones), each parameter flattened row-major.
    """
    params, frozen, buffers = _trainable(model)
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    checks.check_choice("output", output, _OUTPUTS)
    _check_int("chunk_size", chunk_size, 1)
    sizes = [p.numel() for p in params.values()]
    n, num_params = images.shape[0], sum(sizes)
    device = next(iter(params.values())).device
    images = images.to(device)
    targets = None if targets is None else targets.to(device=device, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        num_classes, dtype = _probe(model, images[:1])
        per_row = num_classes if output == "logits" else 1
        if output == "target":
            if targets is None or targets.shape != (n,):
                raise ValueError(f"output='target' needs targets of shape ({n},)")
            checks.check_range("targets", targets, 0, num_classes)
        jac = torch.empty(n * per_row, num_params, dtype=dtype, device=device)

        def logits(p, x):
            return functional_call(model, (p, frozen, buffers), (x.unsqueeze(0),)).squeeze(0)

        def target_logit(p, x, y):
            return logits(p, x).gather(0, y.reshape(1)).squeeze(0)

        if output == "logits":
            per_example = vmap(jacrev(logits), in_dims=(None, 0))
        else:
            per_example = vmap(jacrev(target_logit), in_dims=(None, 0, 0))
        starts = range(0, n, chunk_size)
        for lo in tqdm(starts, desc=desc, disable=not progress, unit="chunk"):
            hi = min(lo + chunk_size, n)
            args = (params, images[lo:hi]) if output == "logits" else (params, images[lo:hi], targets[lo:hi])
            block = per_example(*args)  # name -> (b, [C,] *param.shape)
            rows = jac[lo * per_row:hi * per_row].view(hi - lo, per_row, num_params)
            col = 0
            for name, size in zip(params, sizes):
                rows[:, :, col:col + size] = block[name].reshape(hi - lo, per_row, size)
                col += size
            del block
    finally:
        model.train(was_training)
    return jac


def _noise_floor(sv: torch.Tensor, rows: int, cols: int, dtype: torch.dtype, method: str) -> float:
    if sv.numel() == 0 or float(sv[0]) == 0.0:
        return 0.0
    # Rounding J's entries at its dtype's precision is a perturbation of spectral norm about
    # eps·‖J‖_F·(1/√rows + 1/√cols) (a random matrix with entries of that size); singular
    # values below a few times it are not resolved. numpy's matrix_rank rule,
    # σ_max·max(rows, cols)·eps, is far more conservative: on a float32 MLP Jacobian it
    # discards values that a float64 recomputation confirms to four digits.
    frob = float(sv.square().sum().sqrt())
    tol = 4 * torch.finfo(dtype).eps * frob * (rows ** -0.5 + cols ** -0.5)
    if method == "gram":  # σ = √λ: an eigenvalue error of eps64·σ_max² is a σ error of √eps64·σ_max
        tol = max(tol, 2 * torch.finfo(torch.float64).eps ** 0.5 * float(sv[0]))
    return tol


def _decompose(jac: torch.Tensor, method: str, vectors: bool) -> Spectrum:
    rows, cols = jac.shape
    r = min(rows, cols)
    if method == "auto":
        method = "gram" if rows <= cols else "svd"
    if method == "gram":
        # Θ = J Jᵀ accumulated over column blocks in float64 (bounded extra memory, no
        # float64 copy of J). Its square roots resolve σ down to ≈1e-8·σ_max, about the
        # float32 noise floor of J itself.
        gram = torch.zeros(rows, rows, dtype=torch.float64, device=jac.device)
        step = max(1, (1 << 25) // max(rows, 1))  # ≈256 MiB of float64 per block
        for lo in range(0, cols, step):
            block = jac[:, lo:lo + step].to(torch.float64)
            gram.addmm_(block, block.T)
        del block
        if vectors:
            evals, evecs = torch.linalg.eigh(gram)
            u = evecs[:, -r:].flip(1)
        else:
            evals, u = torch.linalg.eigvalsh(gram), None
        sv = evals[-r:].flip(0).clamp_min(0).sqrt()
    else:
        j64 = jac.to(torch.float64)
        if vectors:
            u, sv, _ = torch.linalg.svd(j64, full_matrices=False)
        else:
            sv, u = torch.linalg.svdvals(j64), None
    tol = _noise_floor(sv, rows, cols, jac.dtype, method)
    rank = int((sv > tol).sum())
    return Spectrum(sv.cpu(), None if u is None else u.cpu(), rank, tol)


def _check_arguments(model, images, targets, augment, max_examples, output, seed, num_bins, chunk_size,
                     method) -> list:
    """:func:`jacobian_spectrum`'s argument checks; returns the model's trainable parameters."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    checks.check_tensor("images", images)
    checks.check_tensor("targets", targets, dim=1, integer=True)
    if images.dim() < 1 or images.shape[0] != targets.shape[0]:
        raise ValueError(f"images has {images.shape[0] if images.dim() else 0} rows but targets has "
                         f"{targets.shape[0]}")
    _check_int("max_examples", max_examples, 1)
    _check_int("chunk_size", chunk_size, 1)
    _check_int("seed", seed, 0)
    _check_int("num_bins", num_bins, 1)
    checks.check_choice("output", output, _OUTPUTS)
    checks.check_choice("method", method, _METHODS)
    if augment is not None and not callable(augment):
        raise ValueError(f"augment must be callable, got {type(augment).__name__}")
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    return params


def _augmented(augment, x: torch.Tensor, seed: int) -> torch.Tensor:
    """``augment(x)`` with torch's generators seeded by ``seed`` and the caller's state
    restored afterwards; checked to keep one finite output row per input."""
    # Seed only the generators that are saved and restored: torch.manual_seed would also
    # queue a seed for a CUDA runtime not yet started and so change the caller's stream.
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=gpus):
        torch.random.default_generator.manual_seed(seed)
        for d in gpus:
            torch.cuda.default_generators[d].manual_seed(seed)
        x_aug = augment(x)
    if not isinstance(x_aug, torch.Tensor):
        raise ValueError(f"augment must return a torch.Tensor, got {type(x_aug).__name__}")
    if x_aug.dim() < 1 or x_aug.shape[0] != x.shape[0]:
        raise ValueError(f"augment turned {x.shape[0]} images into {tuple(x_aug.shape)}; "
                         "it must keep one output per input")
    checks.check_finite("augment(images)", x_aug)
    return x_aug


def jacobian_spectrum(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
                      augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                      max_examples: int = 900, *, output: str = "logits",
                      classes: Optional[Sequence[int]] = None, seed: int = 0, num_bins: int = 30,
                      chunk_size: int = 32, method: str = "auto", vectors: bool = True,
                      progress: bool = True) -> JacobianSpectrum:
    """Singular spectrum of the network Jacobian on original and augmented images, and the
    per-bin measures of App. C.1 comparing them.

    Args:
        model: ``torch.nn.Module`` mapping (b, ...) inputs to (b, C) logits; its trainable
            parameters (``requires_grad``) are the Jacobian's columns. Run in eval mode,
            on its parameters' device; its mode is restored afterwards.
        images: (N, ...) model inputs, any device and dtype the model (and ``augment``) accept.
        targets: (N,) integer labels; pick the examples (``classes``) and, with
            ``output="target"``, the output row.
        augment: optional callable (b, ...) images -> (b, ...) augmented images, applied once
            to the whole subsample on the images' device, under ``torch.random.fork_rng``
            with the CPU generator (and those of started CUDA devices) seeded with ``seed``:
            reproducible for callables drawing from torch's default generators, and the
            caller's generator state is left untouched. Its output must have
            the same number of rows; row j stays paired with original row j.
        max_examples: at most this many examples, drawn uniformly without replacement (see
            :func:`subsample`); all of them when fewer. The paper uses 900 from 3 classes.
        output: ``"logits"`` (rows = n·C) or ``"target"`` (rows = n); see the module docstring.
        classes: optional class ids to draw from (the paper: the first three, ``[0, 1, 2]``).
        seed: seeds the subsample and ``augment``.
        num_bins: equal-count bins of the measures (the paper: 30); needs ``num_bins ≤ r``.
        chunk_size: examples per vmapped Jacobian call; trades speed for memory only.
        method: ``"gram"`` (eigendecomposition of the float64 NTK ``J Jᵀ``, fast when
            rows ≤ P), ``"svd"`` (float64 SVD of J) or ``"auto"`` (gram when rows ≤ P).
        vectors: compute left singular vectors (needed for the angle measure).
        progress: tqdm bars over the Jacobian chunks.

    Returns:
        :class:`JacobianSpectrum` (CPU tensors): the subsample's indices, both spectra
        (singular values descending, ``r = min(rows, P)``), and :class:`BinnedMeasures`
        (``value_diff`` = augmented − original per bin, ``angle`` in radians, bin 0 = the
        smallest singular values) when ``augment`` is given.

    Raises:
        ValueError: ``max_examples < 1``, ``images`` and ``targets`` of different lengths,
            non-integer or non-1-D targets, targets outside [0, C) with ``output="target"``,
            a model without trainable parameters or with outputs not (b, C), an ``augment``
            that changes the number of rows or returns a non-tensor, ``num_bins`` > r, bad
            ``output``/``method``/``chunk_size``, non-finite images.
    """
    params = _check_arguments(model, images, targets, augment, max_examples, output, seed, num_bins, chunk_size,
                              method)
    device = params[0].device
    idx = subsample(targets, max_examples, seed, classes)
    x = images[idx.to(images.device)]
    y = targets[idx.to(targets.device)].to(device=device, dtype=torch.long)
    checks.check_finite("images", x)
    # fail before the expensive part: output shape, target range, enough singular values
    was_training = model.training
    model.eval()
    try:
        num_classes, _ = _probe(model, x[:1].to(device))
    finally:
        model.train(was_training)
    if output == "target":
        checks.check_range("targets", y, 0, num_classes)
    rows = x.shape[0] * (num_classes if output == "logits" else 1)
    num_params = sum(p.numel() for p in params)
    if augment is not None and num_bins > min(rows, num_params):
        raise ValueError(f"num_bins={num_bins} exceeds the number of singular values "
                         f"(min(rows={rows}, P={num_params})); use fewer bins or more examples")
    x_aug = None if augment is None else _augmented(augment, x, seed).to(device)

    def spectrum_of(inputs, tag):
        jac = network_jacobian(model, inputs.to(device), y, output, chunk_size, progress, desc=f"jacobian ({tag})")
        if not bool(torch.isfinite(jac).all()):
            raise ValueError(f"the Jacobian on the {tag} images contains NaN or inf")
        return _decompose(jac, method, vectors)

    original = spectrum_of(x, "original")
    augmented, measures = None, None
    if x_aug is not None:
        augmented = spectrum_of(x_aug, "augmented")
        measures = binned_measures(original.singular_values, augmented.singular_values,
                                   original.left_vectors, augmented.left_vectors, num_bins)
    return JacobianSpectrum(idx, output, rows, num_params, num_classes, original, augmented, measures)
