"""``CoresetAugmentation``: the paper's method (Liu & Mirzasoleiman, NeurIPS 2022, Alg. 1) as
a loop-level object, so that a training loop of one's own needs five lines:

    aug = coreaug_fast.CoresetAugmentation(images, labels, fraction=0.1, select_every=5, copies=4,
                                           mean=MEAN, std=STD, seed=0)
    for epoch in range(epochs):
        for x, y, w in aug.epoch(model, batch_size=128):
            loss = coreaug_fast.weighted_cross_entropy(model(x), y, w)
            ...

Data flow per epoch: (every ``select_every`` epochs) clean forward pass in eval mode ->
last-layer gradient embeddings -> per-class coreset -> the epoch's rows (originals + r
weighted strong copies of the coreset, :mod:`coreaug_fast._rows`) -> shuffled -> batches
gathered by index from the uint8 images and augmented on the model's device.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from ._rows import WEIGHTS, EpochRows, epoch_rows, rank_seed, scale_weights, shard, stream_seeds, weak_first
from ._timing import Clock, PhaseTimer
from .augment import Augmenter, crop_flip, to_device_async
from .distributed import all_gather_into
from .embeddings import gradient_embeddings
from .selection import Coreset, select_coreset, select_max_loss, select_random

METHODS = ("coreset", "random", "max-loss", "none", "full")
SUBSET_METHODS = ("coreset", "random", "max-loss")
AUG_MODES = ("append", "inplace")
EMBEDDINGS = ("last-layer", "last-layer-features")
SIMILARITIES = ("distance", "sqdistance", "exp")
OPTIMIZERS = ("lazy", "naive", "stochastic")
OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
AUGMENT_IMPLS = ("fused", "torchvision")
#: The default of ``weights=``, chosen from a paired comparison on digits (see the README).
DEFAULT_WEIGHTS = "uniform"
#: Rows per chunk of the clean forward pass (at least the batch size).
FORWARD_CHUNK = 1024

Batch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class CoresetAugmentation:
    """Weak augmentation of every example plus ``copies`` weighted strong copies of a subset
    re-selected every ``select_every`` epochs, as batches ``(x, y, w)`` for your own loop.

    **The weight rule.** Each yielded row has a loss weight ``w``; use it as
    ``weighted_cross_entropy(model(x), y, w)`` (Σ w·CE / Σ w over the batch). Originals weigh
    1. Each of the r = ``copies`` strong copies of a selected example j weighs
    ``ρ_j = w_j / r``, where w_j is the selector's weight after ``weights=``:

    * ``"gamma"``: w_j = γ_j, the number of class members j represents (1 for ``random`` and
      ``max-loss``). This is the paper's Alg. 1 (r copies of j together weigh γ_j, so a
      class's copies weigh as much as all its originals).
    * ``"normalized"``: w_j = γ_j / mean(γ) over the subset. This is the authors' released
      code with ``--enable_coreset_augment_weights``; without that flag their copies weigh 1
      (``"uniform"`` with r = 1), and their batch loss is ``(loss * weight).mean()``, i.e.
      ``weighted_cross_entropy(..., normalize="count")``.
    * ``"uniform"`` (default): w_j = 1, so each copy weighs 1/r. Chosen by a paired
      comparison over seeds on digits, where γ/r made strong augmentation worse than none
      (README, "Use it in your own loop").

    ``full`` copies weigh 1 (every example, r copies, w_j = r). With ``subset_only`` the
    originals are the selected examples alone, with weight w_j. With ``aug_mode="inplace"``
    a selected example's copies replace its original row.

    **Selection** happens inside :meth:`epoch` at epochs 0, R, 2R, … (R = ``select_every``):
    one clean forward pass in eval mode over all images (the model's mode is restored),
    then per class ``ceil(fraction · n_c)`` picks: ``coreset`` the facility-location
    medoids of the last-layer gradient embeddings (:func:`select_coreset`), ``max-loss`` the
    largest losses, ``random`` a uniform draw (no forward pass). ``embedding=
    "last-layer-features"`` also uses the penultimate activations, taken by a forward hook
    on ``features`` (the module whose *input* they are, e.g. ``model.fc``).

    Args:
        images: uint8 (N, C, H, W), C = 1 or 3, on the model's device, or in host memory
            for datasets larger than device memory (each batch is gathered on the host into
            a pinned staging buffer and copied asynchronously).
        labels: integer (N,) class ids >= 0.
        fraction: subset size per class, in (0, 1] (subset methods).
        select_every: R, re-select every R epochs (>= 1).
        copies: r, strong copies per selected example (>= 0; ``full`` needs >= 1).
        num_ops, magnitude: RandAugment ops per copy and magnitude bin (of 31).
        padding, flip: the weak augmentation (zero-padded random crop, horizontal flip),
            also applied to strong copies.
        mean, std: per-channel normalisation of x/255 (both or neither).
        method: ``"coreset"``, ``"random"``, ``"max-loss"``, ``"none"`` (weak only) or
            ``"full"`` (strong copies of every example): the paper's baselines.
        subset_only: train on the weighted subset and its copies alone (paper Sec. 5.2).
        aug_mode: ``"append"`` or ``"inplace"`` (paper App. D.6).
        weights: ``"uniform"``, ``"normalized"`` or ``"gamma"`` (see above).
        embedding: ``"last-layer"`` (softmax − one-hot) or ``"last-layer-features"`` (the
            last layer's weight gradients, kept factored); default: the latter when
            ``features`` is given.
        features: the ``nn.Module`` whose input is the penultimate activation.
        similarity, optimizer: passed to :func:`select_coreset`.
        out_dtype: dtype of ``x``: float32, float16 or bfloat16.
        seed: seeds the shuffle, augmentation and selection streams (CPU generators, so a
            run gives the same batches on any device).
        pin_memory: pin the host staging buffers of host-resident images (default None: when
            the model is on CUDA; False: pageable copies, which make the host wait).
        amp: bfloat16 autocast in the selection's forward pass (CUDA).
        augment_impl: ``"fused"`` (this library's ops) or ``"torchvision"`` (the baseline:
            the same rows, augmented by torchvision transforms in DataLoader workers).
        group: a ``torch.distributed`` process group for data-parallel training: each rank
            gets every W-th row of the shared shuffled epoch, runs the forward pass on its
            shard and takes part in a sharded selection (same subset on every rank).
        track_maxloss: also record in :attr:`stats` the share of the subset that max-loss
            would pick too (one more forward pass for ``random``).

    Attributes:
        selection: the current :class:`Coreset` (None before the first selection and for
            ``none``/``full``); its ``weights`` are the selector's, before ``weights=``.
        stats: the last epoch's figures: ``epoch``, ``selected``, ``selection_s``,
            ``augment_s`` (complete once the epoch's batches are consumed), ``rows`` (the
            epoch's rows over all ranks), ``subset_size``, ``fraction_never_selected`` and
            ``maxloss_intersection``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, fraction: float = 0.1,
                 select_every: int = 5, copies: int = 4, num_ops: int = 2, magnitude: int = 9,
                 padding: int = 4, flip: bool = True, mean=None, std=None, method: str = "coreset",
                 subset_only: bool = False, aug_mode: str = "append", weights: str = DEFAULT_WEIGHTS,
                 embedding: Optional[str] = None, features: Optional[nn.Module] = None,
                 similarity: str = "distance", optimizer: str = "lazy",
                 out_dtype: torch.dtype = torch.float32, seed: int = 0, pin_memory: Optional[bool] = None,
                 amp: bool = False, augment_impl: str = "fused", group=None, track_maxloss: bool = False):
        _check_images_labels(images, labels)
        _checks.check_choice("method", method, METHODS)
        _checks.check_choice("aug_mode", aug_mode, AUG_MODES)
        _checks.check_choice("weights", weights, WEIGHTS)
        _checks.check_choice("similarity", similarity, SIMILARITIES)
        _checks.check_choice("optimizer", optimizer, OPTIMIZERS)
        _checks.check_choice("out_dtype", out_dtype, OUT_DTYPES)
        _checks.check_choice("augment_impl", augment_impl, AUGMENT_IMPLS)
        if features is not None and not isinstance(features, nn.Module):
            raise ValueError(f"features must be an nn.Module (the layer whose input is the penultimate "
                             f"activation, e.g. model.fc), got {type(features).__name__}")
        embedding = embedding if embedding is not None else ("last-layer-features" if features is not None
                                                             else "last-layer")
        _checks.check_choice("embedding", embedding, EMBEDDINGS)
        if embedding == "last-layer-features" and features is None:
            raise ValueError('embedding="last-layer-features" needs features=<the module whose input is the '
                             'penultimate activation>, e.g. features=model.fc')
        self.fraction = _checks.check_fraction("fraction", fraction) if method in SUBSET_METHODS else \
            {"none": 0.0, "full": 1.0}[method]
        self.select_every = _checks.check_int("select_every", select_every, low=1)
        self.copies = _checks.check_int("copies", copies, low=0)
        if method == "full" and self.copies == 0:
            raise ValueError('copies must be >= 1 for method="full"')
        if subset_only and method not in SUBSET_METHODS:
            raise ValueError(f"subset_only needs a subset method {SUBSET_METHODS}, got method={method!r}")
        if (mean is None) != (std is None):
            raise ValueError(f"mean and std must be given together, got mean={mean!r}, std={std!r}")
        padding = _checks.check_int("padding", padding, low=0)
        self.seed = _checks.check_int("seed", seed, low=0)
        self.images, self.labels = images, labels.to(images.device).long()
        self.method, self.subset_only, self.aug_mode, self.weights = method, bool(subset_only), aug_mode, weights
        self.embedding, self.features = embedding, features
        self.similarity, self.optimizer, self.out_dtype = similarity, optimizer, out_dtype
        self.padding, self.flip, self.amp = padding, bool(flip), bool(amp)
        self.pin_memory = None if pin_memory is None else bool(pin_memory)
        self.augment_impl, self.group, self.track_maxloss = augment_impl, group, bool(track_maxloss)
        self.num_ops, self.magnitude = num_ops, magnitude
        c = images.shape[1]
        self._mean = [0.0] * c if mean is None else _per_channel("mean", mean, c)
        self._std = [1.0] * c if std is None else _per_channel("std", std, c)
        if any(s == 0 for s in self._std):
            raise ValueError(f"std must be nonzero, got {std!r}")
        # copies=1 with a repeated index: each output row is one independent draw, so the
        # rows line up with the index whatever order the op lays copies out in.
        self._augmenter = Augmenter(num_ops=num_ops, magnitude=magnitude, copies=1, padding=padding, flip=flip,
                                    mean=self._mean, std=self._std, out_dtype=out_dtype)
        seeds = stream_seeds(self.seed)
        self._gen = {k: torch.Generator().manual_seed(seeds[k]) for k in ("shuffle", "augment", "select")}
        self._epoch = 0
        self.selection: Optional[Coreset] = None
        self._subset: Optional[torch.Tensor] = None          # int64 (k,) CPU
        self._subset_weights: Optional[torch.Tensor] = None  # float32 (k,) CPU, after `weights=`
        self._maxloss_intersection: Optional[float] = None
        self._ever_selected = torch.zeros(images.shape[0], dtype=torch.bool)
        self._cache: dict = {}  # device -> (labels, mean, std) there
        self._torchvision = None
        self.stats: dict = {}

    # -- public ------------------------------------------------------------------------------
    @property
    def epoch_index(self) -> int:
        """Epochs started so far (the next :meth:`epoch` call is epoch ``epoch_index``)."""
        return self._epoch

    @property
    def subset(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """(indices int64 (k,), weights float32 (k,) after ``weights=``) on the CPU, or None."""
        return None if self._subset is None else (self._subset, self._subset_weights)

    def epoch(self, model: nn.Module, batch_size: int) -> "EpochBatches":
        """Start the next epoch: select first when due, then return its batches.

        Args:
            model: the network being trained (an ``nn.Module``; a ``DistributedDataParallel``
                wrapper is unwrapped for the selection pass). Batches go to its device.
            batch_size: rows per batch (per rank under ``group``), >= 1.

        Returns:
            An iterable of ``len(...)`` batches ``(x, y, w)``: ``x`` (B, C, H, W) in
            ``out_dtype``, normalised; ``y`` int64 (B,); ``w`` float32 (B,) loss weights
            (see the class docstring); all on the model's device. Within a batch the weak
            rows come first. Iterating it launches device work only (no host
            synchronisation); :attr:`stats` ``augment_s`` is filled in at its end.
        """
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        batch_size = _checks.check_int("batch_size", batch_size, low=1)
        net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        device = _device_of(net, self.images.device)
        e = self._epoch
        rank, world = _rank_world(self.group)
        stats = {"epoch": e, "selected": False, "selection_s": 0.0, "augment_s": 0.0}
        if self.method in SUBSET_METHODS and e % self.select_every == 0:
            stats["selection_s"] = self._select(net, device, batch_size, rank, world)
            stats["selected"] = True
        elif self.method == "full":
            self._ever_selected[:] = True
        rows = epoch_rows(self.images.shape[0], self.method, subset=self._subset,
                          subset_weights=self._subset_weights, copies=self.copies,
                          aug_mode=self.aug_mode, subset_only=self.subset_only)
        perm = torch.randperm(rows.index.numel(), generator=self._gen["shuffle"])
        total = rows.index.numel()
        rows = EpochRows(*(t[perm] for t in rows))
        if world > 1:
            rows = shard(rows, rank, world)
            self._gen["augment"].manual_seed(rank_seed(self.seed, rank, e))
        stats.update(rows=total, subset_size=None if self._subset is None else int(self._subset.numel()),
                     fraction_never_selected=(None if self.method == "none"
                                              else 1.0 - float(self._ever_selected.float().mean())),
                     maxloss_intersection=self._maxloss_intersection)
        self.stats = stats
        self._epoch += 1
        return EpochBatches(self, rows, batch_size, device, stats)

    def transform_eval(self, images_u8: torch.Tensor) -> torch.Tensor:
        """The training normalisation without augmentation: uint8 (M, C, H, W) -> ``out_dtype``
        ``(x / 255 - mean) / std`` on the images' device (use it for evaluation)."""
        _checks.check_tensor("images_u8", images_u8, dim=4)
        if images_u8.dtype != torch.uint8:
            raise ValueError(f"images_u8 must be uint8, got {images_u8.dtype}")
        _, mean, std = self._on(images_u8.device)
        return ((images_u8.float() / 255.0 - mean) / std).to(self.out_dtype)

    def state_dict(self) -> dict:
        """Everything that decides the next epoch's batches, in plain types and CPU tensors
        (loadable with ``torch.load(..., weights_only=True)``): epoch counter, the three
        random streams, the subset and its weights, the current selection, the figures."""
        sel = None if self.selection is None else {
            f.name: getattr(self.selection, f.name).cpu() for f in dataclasses.fields(self.selection)}
        return {"epoch": self._epoch, "generators": {k: g.get_state() for k, g in self._gen.items()},
                "subset": self._subset, "weights": self._subset_weights, "coreset": sel,
                "maxloss_intersection": self._maxloss_intersection, "ever_selected": self._ever_selected,
                "stats": dict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`: the next :meth:`epoch` yields the same batches as the
        saved object's next epoch, bit for bit (given the same model)."""
        missing = {"epoch", "generators", "subset", "weights", "ever_selected"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}: not a CoresetAugmentation state_dict")
        self._epoch = int(state["epoch"])
        for k, g in self._gen.items():
            g.set_state(state["generators"][k])
        self._subset, self._subset_weights = state["subset"], state["weights"]
        sel = state.get("coreset")
        dev = self.images.device
        self.selection = None if sel is None else Coreset(**{k: v.to(dev) for k, v in sel.items()})
        self._maxloss_intersection = state.get("maxloss_intersection")
        self._ever_selected = state["ever_selected"].clone()
        self.stats = dict(state.get("stats", {}))

    # -- selection -----------------------------------------------------------------------
    def _select(self, net: nn.Module, device: torch.device, batch_size: int, rank: int, world: int) -> float:
        """One selection round; returns its seconds (forward pass + selection)."""
        labels = self._on(device)[0]
        n = labels.numel()
        clock = Clock(device)
        need_forward = self.method != "random" or self.track_maxloss
        if self.method == "random":  # needs no forward pass; one below only feeds the overlap figure
            chosen = select_random(labels, self.fraction, generator=self._gen["select"])
            selection_s = clock.lap()
        if need_forward:
            rows = None if world == 1 else torch.arange(rank, n, world, device=device)
            logits, feats = self._clean_forward(net, device, max(batch_size, FORWARD_CHUNK), rows)
            y = labels if rows is None else labels[rows]
            losses = F.cross_entropy(logits, y, reduction="none")
            all_losses = (lambda: losses) if world == 1 else (lambda: _gather_losses(losses, n, world, self.group))
        if self.method == "max-loss":
            chosen = select_max_loss(all_losses(), labels, self.fraction)
        elif self.method == "coreset":
            emb = gradient_embeddings(logits, y, feats)
            chosen = select_coreset(emb, y, self.fraction, similarity=self.similarity, optimizer=self.optimizer,
                                    generator=self._gen["select"], indices=rows,
                                    group=self.group if world > 1 else None)
        if self.method != "random":
            selection_s = clock.lap()
        self.selection = chosen
        self._subset = chosen.indices.cpu().long()
        self._subset_weights = scale_weights(chosen.weights.cpu().float(), self.weights)
        self._ever_selected[self._subset] = True
        if self.track_maxloss:
            top = self._subset if self.method == "max-loss" else \
                select_max_loss(all_losses(), labels, self.fraction).indices.cpu()
            self._maxloss_intersection = _overlap(self._subset, top)
        return selection_s

    @torch.no_grad()
    def _clean_forward(self, net: nn.Module, device, chunk: int, rows: Optional[torch.Tensor]):
        """Logits (n, classes) float32 and, with ``last-layer-features``, the penultimate
        features (n, d) float32 (else None) of every image (or of ``rows``), without
        augmentation, model in eval mode (BatchNorm uses running statistics)."""
        was_training = net.training
        feats: List[torch.Tensor] = []
        hook = None
        if self.embedding == "last-layer-features":
            hook = self.features.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].float()))
        logits = []
        images = self.images if rows is None else self.images[rows.to(self.images.device)]
        dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)
        net.eval()
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp):
                for part in images.split(chunk):
                    logits.append(net(self.transform_eval(to_device_async(part, device)).to(dtype)).float())
        finally:
            net.train(was_training)
            if hook is not None:
                hook.remove()
        if hook is not None and len(feats) != len(logits):
            raise ValueError("features: the hooked module ran "
                             f"{len(feats)} times for {len(logits)} forward passes; name the one layer whose "
                             "input is the penultimate activation (e.g. features=model.fc)")
        return torch.cat(logits), (torch.cat(feats) if hook is not None else None)

    # -- batches ---------------------------------------------------------------------------
    def _on(self, device: torch.device):
        """(labels, mean, std) on ``device``, made once."""
        key = str(device)
        if key not in self._cache:
            view = (1, -1, 1, 1)
            self._cache[key] = (self.labels.to(device),
                                torch.tensor(self._mean, dtype=torch.float32, device=device).view(view),
                                torch.tensor(self._std, dtype=torch.float32, device=device).view(view))
        return self._cache[key]

    def _weak(self, images, index, generator, device) -> torch.Tensor:
        """Random crop (zero padding) and optional flip of ``images[index]`` (all of
        ``images`` when ``index`` is None), normalised."""
        m = images.shape[0] if index is None else index.numel()
        p = self.padding
        offsets = torch.randint(2 * p + 1, (m, 2), generator=generator, dtype=torch.int32)
        flips = (torch.rand(m, generator=generator) < 0.5) & self.flip
        out = crop_flip(images, to_device_async(offsets, device), to_device_async(flips, device), padding=p,
                        index=index, check=False)  # drawn here, in range: no host sync
        _, mean, std = self._on(device)
        return ((out.float() / 255.0 - mean) / std).to(self.out_dtype)

    def _gather(self, index_cpu: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Rows ``index_cpu`` of host-resident images, gathered on the host into a (pinned)
        staging buffer and copied to ``device`` asynchronously."""
        shape = (index_cpu.numel(),) + tuple(self.images.shape[1:])
        pin = self.pin_memory is not False and device.type == "cuda"
        buf = torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
        torch.index_select(self.images, 0, index_cpu, out=buf)
        return buf.to(device, non_blocking=pin)

    def _batch_x(self, index_dev, index_cpu, n_weak: int, device, staged: bool) -> torch.Tensor:
        g = self._gen["augment"]
        parts = []
        if staged:
            src = self._gather(index_cpu, device)
            if n_weak:
                parts.append(self._weak(src[:n_weak], None, g, device))
            if n_weak < src.shape[0]:
                parts.append(self._augmenter(src[n_weak:], generator=g, check=False))
        else:
            if n_weak:
                parts.append(self._weak(self.images, index_dev[:n_weak], g, device))
            if n_weak < index_dev.numel():
                parts.append(self._augmenter(self.images, index=index_dev[n_weak:], generator=g, check=False))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _torchvision_batches(self, rows: EpochRows, batch_size: int, device) -> Iterator[torch.Tensor]:
        if self._torchvision is None:
            from .torchvision_augment import TorchvisionAugment

            self._torchvision = TorchvisionAugment(self.images.cpu(), num_ops=self.num_ops, magnitude=self.magnitude,
                                                   padding=self.padding, flip=self.flip, mean=self._mean,
                                                   std=self._std)
        seed = int(torch.randint(2 ** 62, (1,), generator=self._gen["augment"]))
        return self._torchvision.batches(rows.index, rows.strong, batch_size, seed=seed, device=device)


class EpochBatches:
    """One epoch's batches ``(x, y, w)`` (see :meth:`CoresetAugmentation.epoch`)."""

    def __init__(self, aug: CoresetAugmentation, rows: EpochRows, batch_size: int, device, stats: dict):
        self._aug, self._batch_size, self.device, self._stats = aug, batch_size, device, stats
        self.rows, self._weak = weak_first(rows, batch_size)
        self._it: Optional[Iterator[Batch]] = None

    def __len__(self) -> int:
        return len(self._weak)

    def __iter__(self) -> Iterator[Batch]:
        # One pass per epoch: every iter() shares it (tqdm.auto calls iter() twice), and a
        # finished epoch yields nothing more; aug.epoch(...) starts the next.
        if self._it is None:
            self._it = self._batches()
        return self._it

    def _batches(self) -> Iterator[Batch]:
        aug, dev, bs = self._aug, self.device, self._batch_size
        index_cpu, _, weight = self.rows
        staged = getattr(aug, "_force_staging", False) or aug.images.device != dev
        # One transfer per epoch for what every batch slices: no per-batch copies or checks.
        index_dev = None if staged else to_device_async(index_cpu, aug.images.device)
        y = aug._on(dev)[0][to_device_async(index_cpu, dev)]
        w = to_device_async(weight, dev)
        xs = aug._torchvision_batches(self.rows, bs, dev) if aug.augment_impl == "torchvision" else None
        timer = PhaseTimer(dev)
        for b, n_weak in enumerate(self._weak):
            sl = slice(b * bs, (b + 1) * bs)
            t = timer.start()
            if xs is not None:
                x = next(xs)
            else:
                x = aug._batch_x(None if staged else index_dev[sl], index_cpu[sl], n_weak, dev, staged)
            timer.stop("augment", t)
            yield x, y[sl], w[sl]
        self._stats["augment_s"] = timer.totals().get("augment", 0.0)


# -- helpers -------------------------------------------------------------------------------
def _check_images_labels(images, labels) -> None:
    _checks.check_tensor("images", images, dim=4)
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels (N, C, H, W), got shape {tuple(images.shape)}")
    _checks.check_tensor("labels", labels, dim=1, integer=True)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} rows for {images.shape[0]} images")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("labels must be >= 0")


def _per_channel(name: str, value, channels: int) -> List[float]:
    """One float per channel from a number, a sequence, a 1-D array or tensor (as Augmenter)."""
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        value = torch.as_tensor(value).reshape(-1).tolist() if getattr(value, "ndim", 0) <= 1 else value
    vals = [_checks.check_float(name, v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise ValueError(f"{name} has {len(vals)} values for {channels} channels")
    return vals


def _device_of(model: nn.Module, default: torch.device) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return default


def _rank_world(group) -> Tuple[int, int]:
    if group is None:
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(group), dist.get_world_size(group)


def _gather_losses(losses_shard: torch.Tensor, n: int, world: int, group) -> torch.Tensor:
    """Every example's loss from the ranks' shards (rank r holds rows r, r + W, ...)."""
    width = -(-n // world)
    buf = torch.zeros(width, dtype=torch.float32, device=losses_shard.device)
    buf[:losses_shard.numel()] = losses_shard.float()
    out = torch.empty(world * width, dtype=torch.float32, device=losses_shard.device)
    all_gather_into(out, buf, group)
    # out[r·width + j] is row j·W + r; the padding is exactly the rows >= n, all at the end
    return out.view(world, width).t().reshape(-1)[:n]


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return float(torch.isin(a, b).sum()) / a.numel()
