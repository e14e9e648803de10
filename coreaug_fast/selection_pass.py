"""One selection round of :class:`~coreaug_fast.CoresetAugmentation` (paper Alg. 1, every R
epochs): the logits (and penultimate features) the selector reads, then the selector.

The logits come from a clean forward pass, in eval mode and without augmentation, over every
example's centre view (the paper's), or, with ``selection_pass="train"``, from the training
steps of the epoch before (:mod:`coreaug_fast.recording`), a clean pass filling in the rows
that epoch did not show. Under a process group each rank passes over its own share of the
examples and the selector is sharded: every rank gets the subset one process would select.
"""
from __future__ import annotations

import functools
from typing import Callable, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .selection.embeddings import gradient_embeddings
from .recording import Recording
from .selection import Coreset, select_coreset, select_max_loss, select_random
from .sources import TensorSource
from .timing import Clock

#: Rows per chunk of the clean forward pass over a tensor (at least the batch size).
FORWARD_CHUNK = 1024
#: Rows per chunk of the losses of a selection pass: cross-entropy makes a log-softmax the
#: size of its input, which at ImageNet scale (1.28M x 1,000) would be 5 GB at once.
LOSS_CHUNK = 8192

Outputs = Tuple[Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]


class Round(NamedTuple):
    """What one selection round gives."""

    chosen: Coreset                    # the selector's subset and weights
    seconds: float                     # forward pass + selection
    maxloss_overlap: Optional[float]   # share of the subset max-loss would pick too (``track_maxloss``)


class SelectionPass:
    """The selection settings of a :class:`~coreaug_fast.CoresetAugmentation`, and one round
    of them (:meth:`select`). The arguments are the object's, already checked; ``normalise``
    maps uint8 images to the model's input (its ``transform_eval``)."""

    def __init__(self, source, normalise: Callable[[torch.Tensor], torch.Tensor], *, method: str, fraction: float,
                 similarity: str, optimizer: str, embedding: str, features: Optional[nn.Module], amp: bool,
                 progress: Optional[bool], group, track_maxloss: bool):
        self.source, self.normalise = source, normalise
        self.method, self.fraction, self.similarity, self.optimizer = method, fraction, similarity, optimizer
        self.embedding, self.features, self.amp, self.progress = embedding, features, amp, progress
        self.group, self.track_maxloss = group, track_maxloss

    @property
    def needs_forward(self) -> bool:
        """Whether a round reads the model's outputs (``random`` only for ``track_maxloss``)."""
        return self.method in ("coreset", "max-loss") or (self.track_maxloss and self.method == "random")

    def select(self, net: nn.Module, device: torch.device, labels: torch.Tensor, generator: torch.Generator, *,
               batch_size: int, epoch: int, rank: int = 0, world: int = 1,
               recording: Optional[Recording] = None) -> Round:
        """One round over every example (``labels``: int64 (N,) on ``device``), drawing from
        ``generator``; ``recording``: the ``"train"`` pass's record of the epoch before."""
        n = labels.numel()
        clock = Clock(device)
        if self.method == "random":  # needs no forward pass; one below only feeds the overlap figure
            chosen = select_random(labels, self.fraction, generator=generator)
            seconds = clock.lap()
        if self.needs_forward:
            chunk = max(batch_size, FORWARD_CHUNK) if isinstance(self.source, TensorSource) else batch_size
            rows, logits, feats = self.outputs(net, device, chunk, labels, epoch, rank, world, recording)
            y = labels if rows is None else labels[rows]

            @functools.lru_cache(maxsize=None)
            def all_losses():  # every example's loss, made once and only when asked for
                losses = _cross_entropy_rows(logits, y)
                return losses if world == 1 else _gather_losses(losses, rows, n, self.group)
        if self.method == "max-loss":
            chosen = select_max_loss(all_losses(), labels, self.fraction)
        elif self.method == "coreset":
            # lazy: the selector makes softmax - onehot class by class, never a second (n, C)
            emb = gradient_embeddings(logits, y, feats, lazy=True)
            chosen = select_coreset(emb, y, self.fraction, similarity=self.similarity, optimizer=self.optimizer,
                                    generator=generator, indices=rows, group=self.group if world > 1 else None)
        if self.method != "random":
            seconds = clock.lap()
        overlap = None
        if self.track_maxloss:
            subset = chosen.indices.cpu().long()
            top = subset if self.method == "max-loss" else \
                select_max_loss(all_losses(), labels, self.fraction).indices.cpu()
            overlap = _overlap(subset, top)
        return Round(chosen, seconds, overlap)

    def outputs(self, net: nn.Module, device, chunk: int, labels: torch.Tensor, epoch: int, rank: int = 0,
                world: int = 1, recording: Optional[Recording] = None) -> Outputs:
        """``(rows, logits, features)`` of this rank for the selection: rows ``r, r + W, ...``
        of a clean pass (``rows`` None in one process: every row, in order), or with a
        ``recording`` the rows recorded in the epoch before (each row on the lowest rank that
        recorded it) plus a clean pass over the rows no rank recorded."""
        if recording is None:
            n = labels.numel()
            rows = None if world == 1 else torch.arange(rank, n, world, device=device)
            y = labels if rows is None else labels[rows]
            return (rows,) + self.clean_forward(net, device, chunk, rows, y, epoch)
        if world == 1:
            return None, *self._recorded(net, device, chunk, labels, epoch, recording)
        return self._recorded_shard(net, device, chunk, labels, epoch, rank, world, recording)

    def _recorded(self, net, device, chunk, labels, epoch, rec: Recording):
        """The record in dataset order, its gaps filled in place by a clean pass: no copy of it."""
        n = labels.numel()
        missing = (~rec.seen.to(device)).nonzero().squeeze(1)
        logits = None if rec.logits is None else rec.logits.to(device)
        feats = None if rec.features is None else rec.features.to(device)
        if missing.numel():
            extra_logits, extra_feats = self.clean_forward(net, device, chunk, missing, labels[missing], epoch)
            if logits is None:
                logits = extra_logits.new_zeros((n, extra_logits.shape[1]))
            logits[missing] = extra_logits
            if extra_feats is not None:
                if feats is None:
                    feats = extra_feats.new_zeros((n,) + tuple(extra_feats.shape[1:]))
                feats[missing] = extra_feats
        _check_classes(logits, labels, epoch)
        return logits, feats

    def _recorded_shard(self, net, device, chunk, labels, epoch, rank, world, rec: Recording) -> Outputs:
        """The lowest rank that recorded a row keeps it; the rows nobody saw are shared r::W."""
        import torch.distributed as dist

        seen = rec.seen.to(device)
        owner = torch.where(seen, world - rank, 0).to(torch.int32)
        dist.all_reduce(owner, op=dist.ReduceOp.MAX, group=self.group)
        kept = (seen & (owner == world - rank)).nonzero().squeeze(1)
        missing = (owner == 0).nonzero().squeeze(1)[rank::world]
        logits = None if rec.logits is None else rec.logits.to(device)[kept]
        feats = None if rec.features is None else rec.features.to(device)[kept]
        if missing.numel():
            extra_logits, extra_feats = self.clean_forward(net, device, chunk, missing, labels[missing], epoch)
            logits = extra_logits if logits is None else torch.cat([logits, extra_logits])
            if extra_feats is not None:
                feats = extra_feats if feats is None else torch.cat([feats, extra_feats])
        rows = torch.cat([kept, missing])
        _check_classes(logits, labels[rows], epoch)
        return rows, logits, feats

    @torch.no_grad()
    def clean_forward(self, net: nn.Module, device, chunk: int, rows: Optional[torch.Tensor], labels: torch.Tensor,
                      epoch: int):
        """Logits (n, classes) float32 and, with ``last-layer-features``, the penultimate
        features (n, d) float32 (else None) of every image (or of ``rows``), without
        augmentation, model in eval mode (BatchNorm uses running statistics). Filled batch by
        batch into buffers of their final size: nothing but these two is held."""
        was_training = net.training
        feats: List[torch.Tensor] = []
        hook = None
        if self.embedding == "last-layer-features":
            hook = self.features.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].float()))
        total = len(self.source) if rows is None else rows.numel()
        logits = features = None
        pos = 0
        dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)
        net.eval()
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp), self._bar(total, epoch) as bar:
                for part in self.source.eval_batches(rows, chunk, device):
                    m = part.shape[0]
                    out = _check_output(net(self.normalise(part).to(dtype)), m, epoch)
                    if logits is None:
                        logits = torch.empty((total, out.shape[1]), dtype=torch.float32, device=device)
                    logits[pos:pos + m] = out
                    if hook is not None:
                        h = _one_feature(feats)
                        if features is None:
                            features = torch.empty((total,) + tuple(h.shape[1:]), dtype=torch.float32, device=device)
                        features[pos:pos + m] = h
                    pos += m
                    bar.update(m)
        finally:
            net.train(was_training)
            if hook is not None:
                hook.remove()
        _check_classes(logits, labels, epoch)
        return logits, features

    def _bar(self, total: int, epoch: int):
        """The pass's progress bar: never for a tensor; for a dataset as ``progress`` says
        (None: on a terminal)."""
        from tqdm.auto import tqdm

        disable = True if isinstance(self.source, TensorSource) else \
            (None if self.progress is None else not self.progress)
        return tqdm(total=total, desc=f"selection pass (epoch {epoch})", unit="img", leave=False, disable=disable)


def _one_feature(feats: List[torch.Tensor]) -> torch.Tensor:
    """The one input the ``features`` hook saw in a forward pass."""
    if len(feats) != 1:
        raise ValueError(f"features: the hooked module ran {len(feats)} times in one forward "
                         "pass; name the one layer whose input is the penultimate activation "
                         "(e.g. features=model.fc)")
    return feats.pop()


def _check_output(out, rows: int, epoch: int) -> torch.Tensor:
    """The model's output for ``rows`` images in a selection pass: (rows, classes) floats."""
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.dim() != 2 or out.shape[0] != rows \
            or out.shape[1] < 1:
        got = f"shape {tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model: in the selection pass of epoch {epoch} it returned {got} for {rows} images; "
                         f"expected logits of shape ({rows}, classes)")
    return out.float()


def _cross_entropy_rows(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy, float32 (n,), in chunks (each row's value is the same)."""
    return torch.cat([F.cross_entropy(part, y, reduction="none")
                      for part, y in zip(logits.split(LOSS_CHUNK), labels.split(LOSS_CHUNK))]) \
        if logits.shape[0] else logits.new_zeros(0)


def _check_classes(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> None:
    """The selection pass's logits are finite and cover every label (one host sync; no
    temporary of the logits' size)."""
    lo, hi = torch.aminmax(logits) if logits.numel() else (logits.new_zeros(()), logits.new_zeros(()))
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        bad = int((~torch.isfinite(logits).all(1)).sum())
        raise ValueError(f"model: its output in the selection pass of epoch {epoch} is not finite (NaN or inf "
                         f"in {bad} of {logits.shape[0]} rows): the training has diverged (lower the learning "
                         "rate) or the inputs are broken")
    top = int(labels.max()) if labels.numel() else -1
    if top >= logits.shape[1]:
        raise ValueError(f"labels: class id {top} is outside the model's {logits.shape[1]} outputs "
                         f"(selection pass of epoch {epoch}); the model needs one output per class")


def _gather_losses(losses: torch.Tensor, rows: torch.Tensor, n: int, group) -> torch.Tensor:
    """Every example's loss from the ranks' shares (rank r holds ``losses`` of its ``rows``;
    the ranks' rows are disjoint and cover 0..n-1): one all_reduce of an (n,) vector."""
    import torch.distributed as dist

    out = torch.zeros(n, dtype=torch.float32, device=losses.device)
    out[rows] = losses.float()
    dist.all_reduce(out, group=group)
    return out


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return float(torch.isin(a, b).sum()) / a.numel()
