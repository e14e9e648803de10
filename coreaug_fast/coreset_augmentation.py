"""``CoresetAugmentation``: the paper's method (Liu & Mirzasoleiman, NeurIPS 2022, Alg. 1) as
a loop-level object, so that a training loop of one's own needs five lines:

    aug = coreaug_fast.CoresetAugmentation(images, labels, fraction=0.1, select_every=5, copies=4,
                                           mean=MEAN, std=STD, seed=0)
    for epoch in range(epochs):
        for x, y, w in aug.epoch(model, batch_size=128):
            loss = coreaug_fast.weighted_cross_entropy(model(x), y, w)
            ...

Data flow per epoch (docs/architecture.md): (every ``select_every`` epochs) the selection
pass (:mod:`coreaug_fast.selection_pass`: the model's logits, gradient embeddings, per-class
coreset) -> the epoch's rows (originals + r weighted strong copies of the coreset,
:mod:`coreaug_fast.rows`), shuffled -> each batch's uint8 pixels from the source of rows
(:mod:`coreaug_fast.sources`: a tensor in memory, or a dataset read in DataLoader workers),
augmented on the model's device (:mod:`coreaug_fast.epoch_batches`). This module holds the
object and its epoch; its arguments are checked in :mod:`coreaug_fast.augmentation_args`,
its saved states in :mod:`coreaug_fast.augmentation_state`.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn

from . import augmentation_args as args
from . import checks
from .augment import Augmenter
from .augmentation_state import check_state
from .epoch_batches import BatchBuilder, EpochBatches, eval_images
from .labels import labels_of
from .recording import Recording
from .rows import STREAMS, EpochRows, rank_rows, rank_seed, scale_weights, stream_seeds
from .selection import Coreset
from .selection_pass import SelectionPass
from .sources import make_source
from .vocabulary import (AUG_MODES, AUGMENT_IMPLS, METHODS, OPTIMIZERS, SELECTION_PASSES, SIMILARITIES,
                         SUBSET_METHODS, WEAK_MODES, WEIGHTS)

OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: The default of ``weights=``, chosen from a paired comparison on digits (see the README).
DEFAULT_WEIGHTS = "uniform"
#: The random streams of the object, in its state: all of :data:`coreaug_fast.rows.STREAMS` but
#: the model's initialisation, which the object does not make.
OWN_STREAMS = tuple(name for name in STREAMS if name != "init")


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
        source: where the rows' uint8 pixels come from: a
            :class:`~coreaug_fast.sources.TensorSource` (its ``staged`` gathers batches on
            the host as for host-resident images) or a
            :class:`~coreaug_fast.sources.DatasetSource`.
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
        weak = "crop-flip" if weak is None else weak
        for name, value, names in (("method", method, METHODS), ("aug_mode", aug_mode, AUG_MODES),
                                   ("weights", weights, WEIGHTS), ("similarity", similarity, SIMILARITIES),
                                   ("optimizer", optimizer, OPTIMIZERS), ("out_dtype", out_dtype, OUT_DTYPES),
                                   ("augment_impl", augment_impl, AUGMENT_IMPLS),
                                   ("selection_pass", selection_pass, SELECTION_PASSES), ("weak", weak, WEAK_MODES)):
            checks.check_choice(name, value, names)
        self.embedding, self.features = args.embedding_for(embedding, features), features
        self.fraction, self.select_every, self.copies = args.schedule(method, fraction, select_every, copies,
                                                                      subset_only)
        checks.check_mean_std_given(mean, std)
        self.padding = args.padding_for(weak, padding)
        self.seed = checks.check_int("seed", seed, low=0)
        self.source = make_source(images, labels, image_size=image_size, weak=weak, channels=channels,
                                  num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=prefetch_factor,
                                  augment_impl=augment_impl)
        self.group_batches = self.source.group_batches if group_batches is None else \
            checks.check_int("group_batches", group_batches, low=0, high=args.MAX_GROUP_BATCHES)
        self.method, self.subset_only, self.aug_mode, self.weights = method, bool(subset_only), aug_mode, weights
        self.similarity, self.optimizer, self.out_dtype = similarity, optimizer, out_dtype
        self.flip, self.amp, self.weak = bool(flip), bool(amp), weak
        self.pin_memory = None if pin_memory is None else bool(pin_memory)
        self.augment_impl, self.group, self.track_maxloss = augment_impl, checks.check_group(group), bool(track_maxloss)
        self.progress, self.selection_pass = progress, selection_pass
        self._mean, self._std = args.normalisation(mean, std, self.source.channels)
        # copies=1 with a repeated index: each output row is one independent draw, so the
        # rows line up with the index whatever order the op lays copies out in.
        self._augmenter = Augmenter(num_ops=num_ops, magnitude=magnitude, copies=1, padding=self.padding, flip=flip,
                                    mean=self._mean, std=self._std, out_dtype=out_dtype, policy=policy)
        # the policy's settings as the Augmenter resolved them (RandAugment: 2 ops, bin 9)
        a = self._augmenter
        self.policy, self.num_ops, self.magnitude = a.policy, a.num_ops, a.magnitude
        # last of the checks: a dataset without targets is read whole here
        self.labels = labels_of(self.source, labels, progress)
        seeds = stream_seeds(self.seed)
        self._gen = {k: torch.Generator().manual_seed(seeds[k]) for k in OWN_STREAMS}
        self._builder = BatchBuilder(self.source, a, self._gen["augment"], augment_impl)
        self._selection_pass = SelectionPass(
            self.source, self.transform_eval, method=method, fraction=self.fraction, similarity=similarity,
            optimizer=optimizer, embedding=self.embedding, features=features, amp=self.amp, progress=progress,
            group=self.group, track_maxloss=self.track_maxloss)
        self._reset()

    def _reset(self) -> None:
        """The state before the first epoch (what :meth:`state_dict` saves)."""
        self._epoch = 0
        self.selection: Optional[Coreset] = None
        self._subset: Optional[torch.Tensor] = None          # int64 (k,) CPU
        self._subset_weights: Optional[torch.Tensor] = None  # float32 (k,) CPU, after `weights=`
        self._maxloss_intersection: Optional[float] = None
        self._ever_selected = torch.zeros(len(self.source), dtype=torch.bool)
        self._cache: dict = {}  # device -> (labels, mean, std) there
        self._device: Optional[torch.device] = None  # the model's, at the last epoch()
        self._recording: Optional[Recording] = None  # the train pass's record, awaiting its selection
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

    def epoch(self, model: nn.Module, batch_size: int) -> EpochBatches:
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
        batch_size = checks.check_int("batch_size", batch_size, low=1)
        net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        device = self._device = args.device_of(net, self.source.device)
        e = self._epoch
        rank, world = args.rank_world(self.group)
        stats = {"epoch": e, "selected": False, "selection_s": 0.0, "augment_s": 0.0}
        if self.method in SUBSET_METHODS and e % self.select_every == 0:
            stats["selection_s"] = self._select(net, device, batch_size, rank, world)
            stats["selected"] = True
        elif self.method == "full":
            self._ever_selected[:] = True
        self._recording = None  # a record serves the selection right after its epoch only
        rows, total = self._rows(e, batch_size, rank, world)
        stats.update(rows=total, subset_size=None if self._subset is None else int(self._subset.numel()),
                     fraction_never_selected=(None if self.method == "none"
                                              else 1.0 - float(self._ever_selected.float().mean())),
                     maxloss_intersection=self._maxloss_intersection)
        self.stats = stats
        self._epoch += 1
        recording = None
        if self.selection_pass == "train" and self._selection_pass.needs_forward and (e + 1) % self.select_every == 0:
            recording = self._recording = Recording(len(self.source), device, self.embedding == "last-layer-features")
        return EpochBatches(rows, batch_size, device, stats, labels=self._on(device)[0], builder=self._builder,
                            window=max(self.group_batches, 1), recording=recording, model=model,
                            features=self.features)

    def transform_eval(self, images_u8: torch.Tensor) -> torch.Tensor:
        """The training normalisation without augmentation: uint8 (M, C, H, W) -> ``out_dtype``
        ``(x / 255 - mean) / std`` on the images' device (use it for evaluation)."""
        checks.check_images("images_u8", images_u8, channels=None)
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
        batch_size = checks.check_int("batch_size", batch_size, low=1)
        device = torch.device(device) if device is not None else (self._device or torch.device("cpu"))
        for images, y in eval_images(self.source, data, batch_size, device):
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
        check_state(state, n=len(self.source), config=self._config(), streams=self._gen, method=self.method)
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

    def _rows(self, epoch: int, batch_size: int, rank: int, world: int) -> Tuple[EpochRows, int]:
        """This rank's rows of the epoch, in training order, and the epoch's rows over all ranks."""
        rows, total = rank_rows(len(self.source), self.method, self._gen["shuffle"], subset=self._subset,
                                subset_weights=self._subset_weights, copies=self.copies, aug_mode=self.aug_mode,
                                subset_only=self.subset_only, group_batches=self.group_batches,
                                batch_size=batch_size, rank=rank, world=world)
        if world > 1 or self.group_batches > 1:
            # each rank draws its own augmentation (ranks share one seed); with windows, a rank's
            # windows are its own batches, and so is their augmentation stream
            self._gen["augment"].manual_seed(rank_seed(self.seed, rank, epoch))
        return rows, total

    def _select(self, net: nn.Module, device: torch.device, batch_size: int, rank: int, world: int) -> float:
        """One selection round (:mod:`coreaug_fast.selection_pass`); returns its seconds."""
        r = self._selection_pass.select(net, device, self._on(device)[0], self._gen["select"], batch_size=batch_size,
                                        epoch=self._epoch, rank=rank, world=world, recording=self._recording)
        self.selection = r.chosen
        self._subset = r.chosen.indices.cpu().long()
        self._subset_weights = scale_weights(r.chosen.weights.cpu().float(), self.weights)
        self._ever_selected[self._subset] = True
        if self.track_maxloss:
            self._maxloss_intersection = r.maxloss_overlap
        return r.seconds

    def _on(self, device: torch.device):
        """(labels, mean, std) on ``device``, made once."""
        key = str(device)
        if key not in self._cache:
            view = (1, -1, 1, 1)
            self._cache[key] = (self.labels.to(device),
                                torch.tensor(self._mean, dtype=torch.float32, device=device).view(view),
                                torch.tensor(self._std, dtype=torch.float32, device=device).view(view))
        return self._cache[key]

