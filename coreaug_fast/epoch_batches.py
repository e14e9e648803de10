"""The batches of one epoch: each batch's uint8 rows from the source
(:mod:`coreaug_fast.sources`), augmented on the model's device, with its labels and loss
weights; and the unaugmented images of an evaluation (:func:`eval_images`).

:class:`BatchBuilder` is the one owner of batch building: it holds the source of pixels, the
fused :class:`~coreaug_fast.Augmenter` (or the torchvision baseline built from the same
settings) and the random stream the augmentation draws from. :class:`EpochBatches` walks an
epoch's rows batch by batch through it, times it, and lets the ``"train"`` selection pass
record the training step's outputs (:mod:`coreaug_fast.recording`).
"""
from __future__ import annotations

import time
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn as nn

from .augment import Augmenter, to_device_async
from .recording import Recorder, Recording
from .rows import EpochRows, weak_first
from .sources import DatasetSource, batch_starts, check_dataset, check_images_labels
from .timing import PhaseTimer

Batch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class BatchBuilder:
    """Augmented batches of an epoch's rows.

    Args:
        source: a :class:`~coreaug_fast.sources.TensorSource` or
            :class:`~coreaug_fast.sources.DatasetSource`.
        augmenter: the fused augmentation; with ``impl="torchvision"`` its settings (policy,
            crop, flip, normalisation) build the torchvision baseline instead.
        generator: the CPU stream every augmentation parameter is drawn from.
        impl: ``"fused"`` or ``"torchvision"`` (:data:`~coreaug_fast.vocabulary.AUGMENT_IMPLS`).
    """

    def __init__(self, source, augmenter: Augmenter, generator: torch.Generator, impl: str = "fused"):
        self.source, self.augmenter, self.generator, self.impl = source, augmenter, generator, impl
        self._torchvision = None  # built at its first epoch (it copies the images to the host)

    @property
    def reads_workers(self) -> bool:
        """Whether batches come from DataLoader workers (whose waiting time is worth reporting)."""
        return isinstance(self.source, DatasetSource)

    def batches(self, rows: EpochRows, weak: List[int], batch_size: int, device: torch.device,
                window: int = 1) -> Iterator[Tuple[torch.Tensor, float]]:
        """``(x, seconds waited for the source)`` of each batch of ``batch_size`` consecutive
        ``rows`` (the last may be shorter), whose first ``weak[b]`` rows are weak (see
        :func:`~coreaug_fast.rows.weak_first`); ``x`` on ``device``. ``window``: batches a
        dataset reads at a time. Draws from :attr:`generator` now, before the first batch."""
        if self.impl == "torchvision":
            return ((x, 0.0) for x in self._torchvision_batches(rows, batch_size, device))
        # the workers' crop streams: one draw per epoch, so batches do not depend on the workers
        seed = int(torch.randint(2 ** 62, (1,), generator=self.generator)) if self.reads_workers else 0
        parts = self.source.train_batches(rows.index, batch_starts(rows.index.numel(), batch_size), device,
                                          seed=seed, window=window)
        return self._fused(parts, weak)

    def _fused(self, parts, weak: List[int]) -> Iterator[Tuple[torch.Tensor, float]]:
        """One launch per batch (:meth:`Augmenter.batch`); every parameter is drawn in range,
        so nothing is checked and the host never waits for the device."""
        for n_weak in weak:
            waited = time.perf_counter()
            images, index = next(parts)
            waited = time.perf_counter() - waited
            yield self.augmenter.batch(images, n_weak, index=index, generator=self.generator, check=False), waited

    def _torchvision_batches(self, rows: EpochRows, batch_size: int, device) -> Iterator[torch.Tensor]:
        if self._torchvision is None:
            from .torchvision_augment import TorchvisionAugment

            a = self.augmenter
            strong = dict(num_ops=a.num_ops, magnitude=a.magnitude) if a.policy == "randaugment" \
                else dict(policy=a.policy)
            self._torchvision = TorchvisionAugment(self.source.images.cpu(), padding=a.padding, flip=a.flip,
                                                   mean=a.mean, std=a.std, **strong)
        seed = int(torch.randint(2 ** 62, (1,), generator=self.generator))
        return self._torchvision.batches(rows.index, rows.strong, batch_size, seed=seed, device=device)


class EpochBatches:
    """One epoch's batches ``(x, y, w)`` (see :meth:`CoresetAugmentation.epoch`).

    Args:
        rows: the epoch's rows of this rank, in order.
        batch_size: rows per batch.
        device: where the batches go.
        stats: the epoch's figures, completed at its end (``augment_s``; ``load_s`` when the
            batches come from DataLoader workers).
        labels: int64 (N,) every example's label, on ``device``.
        builder: the :class:`BatchBuilder` that augments them.
        window: batches a dataset reads at a time.
        recording, model, features: with a :class:`~coreaug_fast.recording.Recording`, the
            forward passes of ``model`` on the yielded batches (and of ``features``) fill it.

    Attributes:
        rows: the epoch's rows, each batch's weak rows first (:func:`~coreaug_fast.rows.weak_first`).
        device: where the batches go.
    """

    def __init__(self, rows: EpochRows, batch_size: int, device, stats: dict, *, labels: torch.Tensor,
                 builder: BatchBuilder, window: int = 1, recording: Optional[Recording] = None,
                 model: Optional[nn.Module] = None, features: Optional[nn.Module] = None):
        self._batch_size, self.device, self._stats = batch_size, device, stats
        self._labels, self._builder, self._window = labels, builder, window
        self.rows, self._weak = weak_first(rows, batch_size)
        self._recording, self._model, self._features = recording, model, features
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
        index_cpu, _, weight = self.rows
        index_dev = to_device_async(index_cpu, self.device)
        y = self._labels[index_dev]
        w = to_device_async(weight, self.device)
        recorder = None
        if self._recording is not None:
            features = self._features if self._recording.with_features else None
            recorder = Recorder(self._recording, self._model, features)
        try:
            yield from self._batches_of(index_dev, y, w, recorder)
        finally:
            if recorder is not None:
                recorder.close()

    def _batches_of(self, index_dev, y, w, recorder) -> Iterator[Batch]:
        bs = self._batch_size
        timer = PhaseTimer(self.device)
        xs = self._builder.batches(self.rows, self._weak, bs, self.device, self._window)
        load_s = 0.0
        for b, n_weak in enumerate(self._weak):
            sl = slice(b * bs, (b + 1) * bs)
            t = timer.start()
            x, waited = next(xs)
            load_s += waited
            timer.stop("augment", t)
            if recorder is not None:
                recorder.expect(x, index_dev[sl][:n_weak], n_weak)
            yield x, y[sl], w[sl]
        self._stats["augment_s"] = timer.totals().get("augment", 0.0)
        if self._builder.reads_workers:
            self._stats["load_s"] = load_s


def eval_images(source, data, batch_size: int, device: torch.device) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 (B, C, S, S) images, int64 (B,) labels) on ``device`` of ``data`` to evaluate,
    ``batch_size`` at a time: a pair of tensors ``(images, labels)`` as it is, or a dataset
    read as ``source`` reads (its workers; the shorter side resized, centre-cropped)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, labels = data
        check_images_labels(images, labels)
        for part, y in zip(images.split(batch_size), labels.split(batch_size)):
            yield to_device_async(part, device), to_device_async(y, device).long()
        return
    check_dataset(data, "data")
    reader = source if isinstance(source, DatasetSource) else None
    if reader is None:
        size = source.square_size
        if size is None:
            raise ValueError(f"data: a dataset is evaluated at a square size; this object was built from "
                             f"{tuple(source.images.shape[-2:])} images: pass (images, labels) tensors")
        reader = DatasetSource(data, image_size=size, weak="crop-flip", channels=source.channels, name="data")
    yield from reader.eval_items(data, None, batch_size, device)
