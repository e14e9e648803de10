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
weighted strong copies of the coreset, :mod:`coreaug_fast._rows`) -> shuffled -> each
batch's uint8 pixels from the source of rows (:mod:`coreaug_fast.sources`: a tensor in memory,
or a dataset read in DataLoader workers) -> augmented on the model's device.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from ._rows import (EpochRows, epoch_rows, mix_windows, rank_seed, scale_weights, shard, shuffle,
                    stream_seeds, weak_first)
from ._timing import Clock, PhaseTimer
from .augment import MAX_COPIES, Augmenter, to_device_async
from .loading import MIN_IMAGE_SIZE
from .recording import Recorder, Recording
from .sources import (DatasetSource, TensorSource, batch_starts, check_dataset, check_labels_of, dataset_labels,
                      read_labels)
from .selection.embeddings import gradient_embeddings
from .selection import Coreset, select_coreset, select_max_loss, select_random

from .vocabulary import (AUG_MODES, AUGMENT_IMPLS, EMBEDDINGS, METHODS, OPTIMIZERS, SELECTION_PASSES,  # noqa: E402
                         SIMILARITIES, SUBSET_METHODS, WEAK_MODES, WEIGHTS)

OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
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

    **Data** comes as a uint8 tensor in memory or as a map-style dataset read from disk
    (:mod:`coreaug_fast.sources`). With a dataset, DataLoader workers decode each image and cut
    its fixed-size rows (``weak="resized-crop"``: a RandomResizedCrop per row; ``"crop-flip"``:
    the centre view), and the device does flip, policy and normalisation on whole batches.
    An example's original and copies then share a batch (each image is decoded once per
    epoch): the epoch shuffles examples, not rows.

    Args:
        images: uint8 (N, C, H, W), C = 1 or 3, on the model's device, or in host memory
            for datasets larger than device memory (each batch is gathered on the host into
            a pinned staging buffer and copied asynchronously); or a map-style dataset whose
            items are ``(image, label)``, images of any size: PIL images (torchvision's
            ``ImageFolder``), uint8 HWC ndarrays or CHW tensors, converted to ``channels``
            as ``ImageFolder``'s loader does (``Image.convert("RGB")``: grey repeated, alpha
            dropped; see :mod:`coreaug_fast.loading`). The dataset is never loaded whole.
        labels: integer (N,) class ids >= 0. With a dataset: optional; default its
            ``targets`` (torchvision's folders have them), else one pass over its items.
        image_size: with a dataset, the side of the square rows (>= 8), for training,
            selection and :meth:`eval_batches`.
        weak: ``"crop-flip"`` (default: zero-padded random crop of ``padding`` and flip, the
            CIFAR convention) or ``"resized-crop"`` (datasets only: RandomResizedCrop with
            scale (0.08, 1) and ratio (3/4, 4/3), then flip: the ImageNet convention).
            Evaluation and the selection pass resize the shorter side to ``image_size``
            (``/ 0.875`` for ``"resized-crop"``, ImageNet's 256 for 224), then centre-crop.
        channels: with a dataset, 1 or 3 (default 3, as ``ImageFolder`` gives RGB).
        num_workers, prefetch_factor: with a dataset, its DataLoader's (worker processes
            that decode; 0 reads in this process). Batches do not depend on ``num_workers``.
        fraction: subset size per class, in (0, 1] (subset methods).
        select_every: R, re-select every R epochs (>= 1).
        copies: r, strong copies per selected example (>= 0; ``full`` needs >= 1).
        policy: the strong augmentation of the copies, one of
            :data:`coreaug_fast.policies.POLICIES`: ``"randaugment"`` (default),
            ``"autoaugment-imagenet"`` (the paper's for Caltech256, TinyImageNet and
            ImageNet), ``"autoaugment-cifar10"``, ``"autoaugment-svhn"``, ``"trivialaugment"``;
            each samples what torchvision's transform of that name samples.
        num_ops, magnitude: RandAugment's ops per copy and magnitude bin (of 31), default 2
            and 9; other policies take neither (an error, not ignored).
        padding, flip: the weak augmentation (zero-padded random crop, horizontal flip),
            also applied to strong copies. ``padding`` defaults to 4 for ``"crop-flip"`` and
            must be 0 for ``"resized-crop"`` (the resized crop replaces it).
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
        pin_memory: pin the host staging buffers of host-resident images or of a dataset's
            batches (default None: when the model is on CUDA; False: pageable copies, which
            make the host wait).
        amp: bfloat16 autocast in the selection's forward pass (CUDA).
        augment_impl: ``"fused"`` (this library's ops) or ``"torchvision"`` (the baseline:
            the same rows, augmented by torchvision transforms in DataLoader workers).
        group: a ``torch.distributed`` process group for data-parallel training: each rank
            gets every W-th row of the shared shuffled epoch (with a dataset: one contiguous
            block of it, so each rank reads only its share), runs the forward pass on its
            shard (rows r, r + W, ...) and takes part in a sharded selection (the same subset
            on every rank as in one process).
        track_maxloss: also record in :attr:`stats` the share of the subset that max-loss
            would pick too (one more forward pass for ``random``).
        progress: progress bar of the selection pass over a dataset (None: on a terminal).
        selection_pass: where the selection's logits (and features) come from: ``"clean"``
            (default, the paper's: one more forward pass over the originals, eval mode, no
            augmentation, at the selection epoch) or ``"train"`` (the training loop's own
            forward passes on the weakly augmented originals during the epoch before, taken
            by a forward hook on the model: no extra pass; train mode, weights up to an
            epoch old; rows that epoch did not show get a clean pass of their own; see
            :mod:`coreaug_fast.recording`).
        group_batches: how an epoch's rows are shuffled. ``0``: a uniform permutation of all
            rows (the default for a tensor, as before datasets existed; with a dataset each
            row reads its image). ``k >= 1``: the examples are shuffled, and each example's
            rows (its original and its strong copies) are shuffled within a window of k
            consecutive batches, so its image is decoded once per epoch (twice where it
            straddles two windows); a window is read as k worker tasks split by example and
            put together on the device (which holds one window, k batches of uint8 rows).
            Default 16 for a dataset: the smallest window after which a paired comparison
            over 10 seeds showed no accuracy difference to the uniform shuffle (README;
            1 and 4 trailed it by a few tenths of a point).

    Attributes:
        selection: the current :class:`Coreset` (None before the first selection and for
            ``none``/``full``); its ``weights`` are the selector's, before ``weights=``.
        stats: the last epoch's figures: ``epoch``, ``selected``, ``selection_s``,
            ``augment_s`` (complete once the epoch's batches are consumed), ``rows`` (the
            epoch's rows over all ranks), ``subset_size``, ``fraction_never_selected`` and
            ``maxloss_intersection``; with a dataset also ``load_s`` (time waiting for the
            workers' batches, part of ``augment_s``).
    """

    def __init__(self, images, labels: Optional[torch.Tensor] = None, *, fraction: float = 0.1,
                 select_every: int = 5, copies: int = 4, policy: str = "randaugment",
                 num_ops: Optional[int] = None, magnitude: Optional[int] = None,
                 padding: Optional[int] = None, flip: bool = True, mean=None, std=None, method: str = "coreset",
                 subset_only: bool = False, aug_mode: str = "append", weights: str = DEFAULT_WEIGHTS,
                 embedding: Optional[str] = None, features: Optional[nn.Module] = None,
                 similarity: str = "distance", optimizer: str = "lazy",
                 out_dtype: torch.dtype = torch.float32, seed: int = 0, pin_memory: Optional[bool] = None,
                 amp: bool = False, augment_impl: str = "fused", group=None, track_maxloss: bool = False,
                 image_size: Optional[int] = None, weak: Optional[str] = None, channels: Optional[int] = None,
                 num_workers: int = 0, prefetch_factor: Optional[int] = None, progress: Optional[bool] = None,
                 group_batches: Optional[int] = None, selection_pass: str = "clean"):
        _checks.check_choice("method", method, METHODS)
        _checks.check_choice("aug_mode", aug_mode, AUG_MODES)
        _checks.check_choice("weights", weights, WEIGHTS)
        _checks.check_choice("similarity", similarity, SIMILARITIES)
        _checks.check_choice("optimizer", optimizer, OPTIMIZERS)
        _checks.check_choice("out_dtype", out_dtype, OUT_DTYPES)
        _checks.check_choice("augment_impl", augment_impl, AUGMENT_IMPLS)
        _checks.check_choice("selection_pass", selection_pass, SELECTION_PASSES)
        weak = "crop-flip" if weak is None else weak
        _checks.check_choice("weak", weak, WEAK_MODES)
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
        self.copies = _checks.check_int("copies", copies, low=0, high=MAX_COPIES)
        if method == "full" and self.copies == 0:
            raise ValueError('copies must be >= 1 for method="full"')
        if subset_only and method not in SUBSET_METHODS:
            raise ValueError(f"subset_only needs a subset method {SUBSET_METHODS}, got method={method!r}")
        if (mean is None) != (std is None):
            raise ValueError(f"mean and std must be given together, got mean={mean!r}, std={std!r}")
        if padding is None:
            padding = 4 if weak == "crop-flip" else 0
        padding = _checks.check_int("padding", padding, low=0)
        if weak == "resized-crop" and padding:
            raise ValueError(f'padding must be 0 with weak="resized-crop" (the resized crop replaces the padded '
                             f'crop), got {padding}')
        self.seed = _checks.check_int("seed", seed, low=0)
        self.source = self._make_source(images, labels, image_size=image_size, weak=weak, channels=channels,
                                        num_workers=num_workers, pin_memory=pin_memory,
                                        prefetch_factor=prefetch_factor, augment_impl=augment_impl)
        self.labels = self._make_labels(labels, progress)
        self.group_batches = self.source.group_batches if group_batches is None else \
            _checks.check_int("group_batches", group_batches, low=0, high=2 ** 20)
        self.method, self.subset_only, self.aug_mode, self.weights = method, bool(subset_only), aug_mode, weights
        self.embedding, self.features = embedding, features
        self.similarity, self.optimizer, self.out_dtype = similarity, optimizer, out_dtype
        self.padding, self.flip, self.amp, self.weak = padding, bool(flip), bool(amp), weak
        self.pin_memory = None if pin_memory is None else bool(pin_memory)
        self.augment_impl, self.group, self.track_maxloss = augment_impl, _check_group(group), bool(track_maxloss)
        self.progress = progress
        self.selection_pass = selection_pass
        c = self.source.channels
        self._mean = [0.0] * c if mean is None else _per_channel("mean", mean, c)
        self._std = [1.0] * c if std is None else _per_channel("std", std, c)
        if any(s == 0 for s in self._std):
            raise ValueError(f"std must be nonzero, got {std!r}")
        # copies=1 with a repeated index: each output row is one independent draw, so the
        # rows line up with the index whatever order the op lays copies out in.
        self._augmenter = Augmenter(num_ops=num_ops, magnitude=magnitude, copies=1, padding=padding, flip=flip,
                                    mean=self._mean, std=self._std, out_dtype=out_dtype, policy=policy)
        # the policy's settings as the Augmenter resolved them (RandAugment: 2 ops, bin 9)
        a = self._augmenter
        self.policy, self.num_ops, self.magnitude = a.policy, a.num_ops, a.magnitude
        seeds = stream_seeds(self.seed)
        self._gen = {k: torch.Generator().manual_seed(seeds[k]) for k in ("shuffle", "augment", "select")}
        self._epoch = 0
        self.selection: Optional[Coreset] = None
        self._subset: Optional[torch.Tensor] = None          # int64 (k,) CPU
        self._subset_weights: Optional[torch.Tensor] = None  # float32 (k,) CPU, after `weights=`
        self._maxloss_intersection: Optional[float] = None
        self._ever_selected = torch.zeros(len(self.source), dtype=torch.bool)
        self._cache: dict = {}  # device -> (labels, mean, std) there
        self._device: Optional[torch.device] = None  # the model's, at the last epoch()
        self._torchvision = None
        self._recording: Optional[Recording] = None  # the train pass's record, awaiting its selection
        self.stats: dict = {}

    def _make_source(self, images, labels, *, image_size, weak, channels, num_workers, pin_memory, prefetch_factor,
                     augment_impl):
        if isinstance(images, torch.Tensor):
            _check_images_labels(images, labels)
            for name, value in (("image_size", image_size), ("channels", channels), ("prefetch_factor", prefetch_factor)):
                if value is not None:
                    raise ValueError(f"{name} applies to a dataset; a tensor's images are used at their own "
                                     f"shape {tuple(images.shape[1:])}")
            if num_workers:
                raise ValueError("num_workers applies to a dataset; a tensor's batches are gathered by index")
            if weak != "crop-flip":
                raise ValueError(f'weak={weak!r} needs a dataset (images of any size, cropped in DataLoader '
                                 f'workers); for a uint8 tensor use weak="crop-flip"')
            return TensorSource(images, pin_memory)
        check_dataset(images)
        if image_size is None:
            raise ValueError("image_size is needed with a dataset: the side of the square rows every image is "
                             f"cropped or resized to, >= {MIN_IMAGE_SIZE} (e.g. 224)")
        if augment_impl != "fused":
            raise ValueError(f'augment_impl={augment_impl!r} takes a uint8 tensor; a dataset is augmented by '
                             f'the fused op ("fused")')
        channels = 3 if channels is None else channels
        _checks.check_choice("channels", channels, (1, 3))
        return DatasetSource(images, image_size=image_size, weak=weak, channels=channels, num_workers=num_workers,
                             pin_memory=pin_memory, prefetch_factor=prefetch_factor)

    def _make_labels(self, labels, progress) -> torch.Tensor:
        """int64 (N,) labels: on the images' device for a tensor, on the CPU for a dataset."""
        source = self.source
        if isinstance(source, TensorSource):
            return labels.to(source.device).long()
        dataset = source.dataset
        if labels is None:
            labels = dataset_labels(dataset)
            if labels is None:
                labels = read_labels(source, progress)
        else:
            _checks.check_tensor("labels", labels, dim=1, integer=True)
            _checks.check_rows(len(dataset), labels=labels)
            labels = labels.cpu().long()
        check_labels_of(dataset, labels)
        return labels

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
        device = _device_of(net, self.source.device)
        self._device = device
        e = self._epoch
        rank, world = _rank_world(self.group)
        stats = {"epoch": e, "selected": False, "selection_s": 0.0, "augment_s": 0.0}
        if self.method in SUBSET_METHODS and e % self.select_every == 0:
            stats["selection_s"] = self._select(net, device, batch_size, rank, world)
            stats["selected"] = True
        elif self.method == "full":
            self._ever_selected[:] = True
        self._recording = None  # a record serves the selection right after its epoch only
        n = len(self.source)
        _check_rows_fit(n, self.copies * (n if self.method == "full" else
                                          0 if self._subset is None else self._subset.numel()))
        rows = epoch_rows(n, self.method, subset=self._subset, subset_weights=self._subset_weights,
                          copies=self.copies, aug_mode=self.aug_mode, subset_only=self.subset_only)
        total = rows.index.numel()
        grouped = self.group_batches > 0
        rows = shuffle(rows, self._gen["shuffle"], n if grouped else None)
        if world > 1:
            rows = shard(rows, rank, world, blocks=grouped)
        if self.group_batches > 1:  # after sharding: a rank's windows are its own batches
            rows = mix_windows(rows, self.group_batches * batch_size, self._gen["shuffle"])
            self._gen["augment"].manual_seed(rank_seed(self.seed, rank, e))
        stats.update(rows=total, subset_size=None if self._subset is None else int(self._subset.numel()),
                     fraction_never_selected=(None if self.method == "none"
                                              else 1.0 - float(self._ever_selected.float().mean())),
                     maxloss_intersection=self._maxloss_intersection)
        self.stats = stats
        self._epoch += 1
        recording = None
        if self.selection_pass == "train" and self._needs_forward() and (e + 1) % self.select_every == 0:
            recording = self._recording = Recording(n, device, self.embedding == "last-layer-features")
        return EpochBatches(self, rows, batch_size, device, stats, recording=recording, model=model)

    def transform_eval(self, images_u8: torch.Tensor) -> torch.Tensor:
        """The training normalisation without augmentation: uint8 (M, C, H, W) -> ``out_dtype``
        ``(x / 255 - mean) / std`` on the images' device (use it for evaluation)."""
        _checks.check_tensor("images_u8", images_u8, dim=4)
        if images_u8.dtype != torch.uint8:
            raise ValueError(f"images_u8 must be uint8, got {images_u8.dtype}")
        if images_u8.shape[1] != self.source.channels:
            raise ValueError(f"images_u8 has {images_u8.shape[1]} channels; this object normalises "
                             f"{self.source.channels} (shape {tuple(images_u8.shape)})")
        _, mean, std = self._on(images_u8.device)
        return ((images_u8.float() / 255.0 - mean) / std).to(self.out_dtype)

    def eval_batches(self, data, batch_size: int = 256, *,
                     device: "torch.device | str | None" = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Evaluation batches ``(x, y)``, without augmentation, normalised as in training.

        Args:
            data: a map-style dataset of ``(image, label)`` items (images of any size: read in
                this object's DataLoader workers, shorter side resized and centre-cropped as in
                the selection pass, see ``weak``), or a pair ``(images, labels)`` of a uint8
                (M, C, H, W) tensor and an integer (M,) tensor.
            batch_size: rows per batch, >= 1.
            device: where the batches go; default the model's device at the last :meth:`epoch`
                (the CPU before the first).

        Yields:
            ``x`` (B, C, S, S) in ``out_dtype``, ``y`` int64 (B,), on ``device``.
        """
        batch_size = _checks.check_int("batch_size", batch_size, low=1)
        device = torch.device(device) if device is not None else (self._device or torch.device("cpu"))
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            images, labels = data
            _check_images_labels(images, labels)
            for part, y in zip(images.split(batch_size), labels.split(batch_size)):
                yield self.transform_eval(to_device_async(part, device)), to_device_async(y, device).long()
            return
        check_dataset(data, "data")
        reader = self.source if isinstance(self.source, DatasetSource) else None
        if reader is None:
            size = self.source.square_size
            if size is None:
                raise ValueError(f"data: a dataset is evaluated at a square size; this object was built from "
                                 f"{tuple(self.source.images.shape[-2:])} images: pass (images, labels) tensors")
            reader = DatasetSource(data, image_size=size, weak="crop-flip", channels=self.source.channels, name="data")
        for images, y in reader.eval_items(data, None, batch_size, device):
            yield self.transform_eval(images), y

    def state_dict(self) -> dict:
        """Everything that decides the next epoch's batches, in plain types and CPU tensors
        (loadable with ``torch.load(..., weights_only=True)``): epoch counter, the three
        random streams, the subset and its weights, the current selection, the figures, and
        the configuration they belong to (checked by :meth:`load_state_dict`). The tensors are
        copies: later epochs do not change a state already taken."""
        sel = None if self.selection is None else {
            f.name: getattr(self.selection, f.name).cpu().clone() for f in dataclasses.fields(self.selection)}
        copy = lambda t: None if t is None else t.clone()  # noqa: E731
        return {"epoch": self._epoch, "generators": {k: g.get_state() for k, g in self._gen.items()},
                "subset": copy(self._subset), "weights": copy(self._subset_weights), "coreset": sel,
                "maxloss_intersection": self._maxloss_intersection, "ever_selected": self._ever_selected.clone(),
                "stats": dict(self.stats), "config": self._config(),
                # between a "train"-pass recording epoch and its selection: what was recorded
                "recording": None if self._recording is None else self._recording.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`: the next :meth:`epoch` yields the same batches as the
        saved object's next epoch, bit for bit (given the same model).

        Raises:
            ValueError: naming the field, when the state is not a state of this object's
                configuration (another N, seed, method, fraction, ...) or holds values no
                epoch could have produced (a negative epoch, NaN weights, indices out of range).
        """
        _check_state(state, self)
        self._epoch = int(state["epoch"])
        for k, g in self._gen.items():
            g.set_state(state["generators"][k].clone())
        self._subset = None if state["subset"] is None else state["subset"].clone()
        self._subset_weights = None if state["weights"] is None else state["weights"].clone()
        sel = state.get("coreset")
        dev = self.labels.device
        self.selection = None if sel is None else Coreset(**{k: v.to(dev).clone() for k, v in sel.items()})
        self._maxloss_intersection = state.get("maxloss_intersection")
        self._ever_selected = state["ever_selected"].clone()
        self.stats = dict(state.get("stats", {}))
        recording = state.get("recording")
        self._recording = None if recording is None else Recording.from_state(recording, self._device or dev)

    def _config(self) -> dict:
        """What a state belongs to: the settings that decide which rows an epoch has."""
        return {"n": len(self.source), "method": self.method, "fraction": self.fraction, "seed": self.seed,
                "copies": self.copies, "select_every": self.select_every, "subset_only": self.subset_only,
                "aug_mode": self.aug_mode, "weights": self.weights, "selection_pass": self.selection_pass}

    # -- selection -----------------------------------------------------------------------
    def _select(self, net: nn.Module, device: torch.device, batch_size: int, rank: int, world: int) -> float:
        """One selection round; returns its seconds (forward pass + selection)."""
        labels = self._on(device)[0]
        n = labels.numel()
        clock = Clock(device)
        need_forward = self._needs_forward()
        if self.method == "random":  # needs no forward pass; one below only feeds the overlap figure
            chosen = select_random(labels, self.fraction, generator=self._gen["select"])
            selection_s = clock.lap()
        if need_forward:
            chunk = batch_size if isinstance(self.source, DatasetSource) else max(batch_size, FORWARD_CHUNK)
            rows, logits, feats = self._selection_outputs(net, device, chunk, labels, rank, world)
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

    def _needs_forward(self) -> bool:
        return self.method in ("coreset", "max-loss") or (self.track_maxloss and self.method == "random")

    def _selection_outputs(self, net: nn.Module, device, chunk: int, labels: torch.Tensor, rank: int, world: int):
        """``(rows, logits, features)`` of this rank for the selection: rows ``r, r + W, ...``
        of a clean pass (``rows`` None in one process: every row, in order), or with the
        ``"train"`` pass the rows recorded in the epoch before (each row on the lowest rank
        that recorded it) plus a clean pass over the rows no rank recorded."""
        n = labels.numel()
        rec = self._recording
        if rec is None:
            rows = None if world == 1 else torch.arange(rank, n, world, device=device)
            y = labels if rows is None else labels[rows]
            return (rows,) + self._clean_forward(net, device, chunk, rows, y)
        seen = rec.seen.to(device)
        if world == 1:  # the record in dataset order, its gaps filled in place: no copy of it
            missing = (~seen).nonzero().squeeze(1)
            logits = None if rec.logits is None else rec.logits.to(device)
            feats = None if rec.features is None else rec.features.to(device)
            if missing.numel():
                extra_logits, extra_feats = self._clean_forward(net, device, chunk, missing, labels[missing])
                if logits is None:
                    logits = extra_logits.new_zeros((n, extra_logits.shape[1]))
                logits[missing] = extra_logits
                if extra_feats is not None:
                    if feats is None:
                        feats = extra_feats.new_zeros((n,) + tuple(extra_feats.shape[1:]))
                    feats[missing] = extra_feats
            _check_classes(logits, labels, self._epoch)
            return None, logits, feats
        # the lowest rank that recorded a row keeps it; the rows nobody saw are shared r::W
        import torch.distributed as dist

        owner = torch.where(seen, world - rank, 0).to(torch.int32)
        dist.all_reduce(owner, op=dist.ReduceOp.MAX, group=self.group)
        kept = (seen & (owner == world - rank)).nonzero().squeeze(1)
        missing = (owner == 0).nonzero().squeeze(1)[rank::world]
        logits = None if rec.logits is None else rec.logits.to(device)[kept]
        feats = None if rec.features is None else rec.features.to(device)[kept]
        if missing.numel():
            extra_logits, extra_feats = self._clean_forward(net, device, chunk, missing, labels[missing])
            logits = extra_logits if logits is None else torch.cat([logits, extra_logits])
            if extra_feats is not None:
                feats = extra_feats if feats is None else torch.cat([feats, extra_feats])
        rows = torch.cat([kept, missing])
        _check_classes(logits, labels[rows], self._epoch)
        return rows, logits, feats

    @torch.no_grad()
    def _clean_forward(self, net: nn.Module, device, chunk: int, rows: Optional[torch.Tensor], labels: torch.Tensor):
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
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"selection pass (epoch {self._epoch})", unit="img", leave=False,
                   disable=True if isinstance(self.source, TensorSource) else
                   (None if self.progress is None else not self.progress))
        net.eval()
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp), bar:
                for part in self.source.eval_batches(rows, chunk, device):
                    m = part.shape[0]
                    out = _check_output(net(self.transform_eval(part).to(dtype)), m, self._epoch)
                    if logits is None:
                        logits = torch.empty((total, out.shape[1]), dtype=torch.float32, device=device)
                    logits[pos:pos + m] = out
                    if hook is not None:
                        if len(feats) != 1:
                            raise ValueError(f"features: the hooked module ran {len(feats)} times in one forward "
                                             "pass; name the one layer whose input is the penultimate activation "
                                             "(e.g. features=model.fc)")
                        h = feats.pop()
                        if features is None:
                            features = torch.empty((total,) + tuple(h.shape[1:]), dtype=torch.float32, device=device)
                        features[pos:pos + m] = h
                    pos += m
                    bar.update(m)
        finally:
            net.train(was_training)
            if hook is not None:
                hook.remove()
        _check_classes(logits, labels, self._epoch)
        return logits, features

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

    def _augment_batch(self, images: torch.Tensor, index: Optional[torch.Tensor], n_weak: int) -> torch.Tensor:
        """One batch, weak rows first: rows ``index`` of ``images`` (``images`` itself when
        ``index`` is None), the first ``n_weak`` weakly augmented, the rest strong copies, in
        one launch (:meth:`Augmenter.batch`). Every parameter is drawn here, in range: no
        host synchronisation."""
        return self._augmenter.batch(images, n_weak, index=index, generator=self._gen["augment"], check=False)

    def _torchvision_batches(self, rows: EpochRows, batch_size: int, device) -> Iterator[torch.Tensor]:
        if self._torchvision is None:
            from .torchvision_augment import TorchvisionAugment

            strong = dict(num_ops=self.num_ops, magnitude=self.magnitude) if self.policy == "randaugment" \
                else dict(policy=self.policy)
            self._torchvision = TorchvisionAugment(self.source.images.cpu(), padding=self.padding, flip=self.flip,
                                                   mean=self._mean, std=self._std, **strong)
        seed = int(torch.randint(2 ** 62, (1,), generator=self._gen["augment"]))
        return self._torchvision.batches(rows.index, rows.strong, batch_size, seed=seed, device=device)


class EpochBatches:
    """One epoch's batches ``(x, y, w)`` (see :meth:`CoresetAugmentation.epoch`)."""

    def __init__(self, aug: CoresetAugmentation, rows: EpochRows, batch_size: int, device, stats: dict, *,
                 recording: Optional[Recording] = None, model: Optional[nn.Module] = None):
        self._aug, self._batch_size, self.device, self._stats = aug, batch_size, device, stats
        self.rows, self._weak = weak_first(rows, batch_size)
        self._recording, self._model = recording, model
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
        aug, dev = self._aug, self.device
        index_cpu, _, weight = self.rows
        index_dev = to_device_async(index_cpu, dev)
        y = aug._on(dev)[0][index_dev]
        w = to_device_async(weight, dev)
        recorder = None if self._recording is None else \
            Recorder(self._recording, self._model, aug.features if self._recording.with_features else None)
        try:
            yield from self._batches_of(index_cpu, index_dev, y, w, recorder)
        finally:
            if recorder is not None:
                recorder.close()

    def _batches_of(self, index_cpu, index_dev, y, w, recorder) -> Iterator[Batch]:
        aug, dev, bs = self._aug, self.device, self._batch_size
        timer = PhaseTimer(dev)
        if aug.augment_impl == "torchvision":
            xs = aug._torchvision_batches(self.rows, bs, dev)
            for b, n_weak in enumerate(self._weak):
                sl = slice(b * bs, (b + 1) * bs)
                t = timer.start()
                x = next(xs)
                timer.stop("augment", t)
                if recorder is not None:
                    recorder.expect(x, index_dev[sl][:n_weak], n_weak)
                yield x, y[sl], w[sl]
            self._stats["augment_s"] = timer.totals().get("augment", 0.0)
            return
        workers = isinstance(aug.source, DatasetSource)
        # the workers' crop streams: one draw per epoch, so batches do not depend on the workers
        seed = int(torch.randint(2 ** 62, (1,), generator=aug._gen["augment"])) if workers else 0
        sources = aug.source.train_batches(index_cpu, batch_starts(index_cpu.numel(), bs), dev, seed=seed,
                                           staged=getattr(aug, "_force_staging", False),
                                           window=max(aug.group_batches, 1))
        load_s = 0.0
        for b, n_weak in enumerate(self._weak):
            sl = slice(b * bs, (b + 1) * bs)
            t = timer.start()
            waited = time.perf_counter()
            images, index = next(sources)
            load_s += time.perf_counter() - waited
            x = aug._augment_batch(images, index, n_weak)
            timer.stop("augment", t)
            if recorder is not None:
                recorder.expect(x, index_dev[sl][:n_weak], n_weak)
            yield x, y[sl], w[sl]
        self._stats["augment_s"] = timer.totals().get("augment", 0.0)
        if workers:
            self._stats["load_s"] = load_s


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


def _check_group(group):
    """None or a ``torch.distributed`` process group (a name such as ``"world"`` is not one)."""
    if group is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and isinstance(group, dist.ProcessGroup)):
        raise ValueError(f"group must be a torch.distributed ProcessGroup (e.g. dist.group.WORLD) or None, "
                         f"got {type(group).__name__} {group!r}")
    return group


#: Bytes of the epoch's row tables per row (index, flag, weight, and the copies made while
#: shuffling, sharding and ordering them), for the memory check before they are built.
ROW_BYTES = 64


def _available_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_rows_fit(originals: int, copies: int) -> None:
    """Refuse an epoch whose row tables alone would not fit in memory (``copies`` too large for
    the data), with a message, instead of the OOM killer."""
    rows = originals + copies
    need = rows * ROW_BYTES
    avail = _available_bytes()
    if avail is not None and need > avail:
        raise ValueError(f"copies: an epoch of {rows:,} rows ({originals:,} originals + {copies:,} strong copies) "
                         f"needs about {need / 2**30:.1f} GiB for its row tables, more than the "
                         f"{avail / 2**30:.1f} GiB of memory available; lower copies")


def _check_output(out, rows: int, epoch: int) -> torch.Tensor:
    """The model's output for ``rows`` images in a selection pass: (rows, classes) floats."""
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.dim() != 2 or out.shape[0] != rows \
            or out.shape[1] < 1:
        got = f"shape {tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model: in the selection pass of epoch {epoch} it returned {got} for {rows} images; "
                         f"expected logits of shape ({rows}, classes)")
    return out.float()


#: Rows per chunk of the losses of a selection pass: cross-entropy makes a log-softmax the
#: size of its input, which at ImageNet scale (1.28M x 1,000) would be 5 GB at once.
LOSS_CHUNK = 8192


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


_STATE_KEYS = ("epoch", "generators", "subset", "weights", "ever_selected")


def _check_state(state, aug: "CoresetAugmentation") -> None:
    """A :meth:`CoresetAugmentation.state_dict` of ``aug``'s configuration, with values an
    epoch could have produced; a ValueError naming the first field that is not."""
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict from CoresetAugmentation.state_dict(), got {type(state).__name__}")
    missing = set(_STATE_KEYS) - set(state)
    if missing:
        raise ValueError(f"state is missing {sorted(missing)}: not a CoresetAugmentation state_dict")
    n = len(aug.source)
    config = state.get("config")
    if config is not None:
        here = aug._config()
        for key, value in here.items():
            if key in config and config[key] != value:
                raise ValueError(f"state: {key} is {config.get(key)!r} there and {value!r} here: a state of "
                                 f"another configuration")
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"state: epoch must be an int >= 0, got {epoch!r}")
    gens = state["generators"]
    size = torch.Generator().get_state().numel()
    if not isinstance(gens, dict) or set(gens) != set(aug._gen):
        raise ValueError(f"state: generators must hold {sorted(aug._gen)}, got "
                         f"{sorted(gens) if isinstance(gens, dict) else type(gens).__name__}")
    for k, g in gens.items():
        if not isinstance(g, torch.Tensor) or g.dtype != torch.uint8 or g.numel() != size:
            raise ValueError(f"state: generators[{k!r}] is not a CPU generator state ({size} uint8 values)")
    ever = state["ever_selected"]
    if not isinstance(ever, torch.Tensor) or ever.dtype != torch.bool or tuple(ever.shape) != (n,):
        shape = tuple(ever.shape) if isinstance(ever, torch.Tensor) else type(ever).__name__
        raise ValueError(f"state: ever_selected must be a bool tensor of shape ({n},) (one flag per example), "
                         f"got {shape}: a state of a dataset of another size")
    recording = state.get("recording")
    if recording is not None:
        seen, logits = recording.get("seen"), recording.get("logits")
        if not isinstance(seen, torch.Tensor) or seen.dtype != torch.bool or tuple(seen.shape) != (n,) or (
                logits is not None and (logits.dim() != 2 or logits.shape[0] != n)):
            raise ValueError(f"state: recording must hold a bool seen ({n},) and logits ({n}, classes)")
        if logits is not None and not bool(torch.isfinite(logits).all()):
            raise ValueError("state: recording.logits must be finite")
    subset, weights = state["subset"], state["weights"]
    if (subset is None) != (weights is None):
        raise ValueError("state: subset and weights must both be set or both be None")
    if subset is None:
        if aug.method in SUBSET_METHODS and epoch > 0:
            raise ValueError(f"state: subset is None after {epoch} epochs of method {aug.method!r}")
        return
    if aug.method not in SUBSET_METHODS:
        raise ValueError(f"state: holds a subset, but method {aug.method!r} selects none")
    if not isinstance(subset, torch.Tensor) or subset.dim() != 1 or subset.dtype != torch.long:
        raise ValueError("state: subset must be an int64 (k,) tensor")
    if subset.numel() and (int(subset.min()) < 0 or int(subset.max()) >= n):
        raise ValueError(f"state: subset has indices outside [0, {n})")
    if not isinstance(weights, torch.Tensor) or weights.dtype != torch.float32 or weights.shape != subset.shape:
        raise ValueError(f"state: weights must be a float32 tensor of the subset's shape ({subset.numel()},)")
    if weights.numel() and not bool((torch.isfinite(weights) & (weights >= 0)).all()):
        raise ValueError("state: weights must be finite and >= 0")


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
