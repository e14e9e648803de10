"""Where :class:`~coreaug_fast.CoresetAugmentation` gets the uint8 pixels of its rows: the one
piece that differs between data held as a tensor and data read from a dataset.

* :class:`TensorSource`: uint8 (N, C, H, W) in memory. On the model's device, a batch is the
  whole tensor plus the batch's row index (the fused op gathers); in host memory, the batch's
  rows are gathered into a (pinned) staging buffer and copied asynchronously.
* :class:`DatasetSource`: a map-style dataset of ``(image, label)`` items of any size, read in
  ``DataLoader`` workers a whole batch per task (:mod:`coreaug_fast.loading`): memory stays
  bounded by a window of batches on the device plus batch size x workers x prefetch in
  flight, never by N. An example's rows (its original and its strong copies) are kept within
  a window of a few batches in the epoch's order (:attr:`group_batches`), and each worker
  task reads all the rows of its examples, so each source image is decoded once per epoch
  (twice for the few examples whose rows straddle two windows).

Both give, per batch, ``(images, index)``: uint8 images on the device and either the rows'
positions in ``images`` (an int64 index on the device) or None (``images`` holds the rows
themselves, in order).
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import torch

from . import checks
from .augment import to_device_async
from .vocabulary import WEAK_MODES
from .loading import (MIN_IMAGE_SIZE, BatchReader, Failed, ItemError, check_label, consecutive,
                      eval_resize, read_item)

Batch = Tuple[torch.Tensor, Optional[torch.Tensor]]


def batch_starts(rows: int, batch_size: int) -> List[int]:
    """Start of every batch of ``batch_size`` consecutive rows, and ``rows`` at the end."""
    return list(range(0, rows, batch_size)) + [rows]


class TensorSource:
    """Rows of a uint8 (N, C, H, W) tensor held in device or host memory.

    Attributes:
        images: the tensor.
        pin_memory: pin the host staging buffers (None: when the batches go to CUDA).
        staged: gather every batch on the host into a staging buffer, even where the images
            are on the batches' device (the path host-resident images take; set it to run
            that path on a machine whose only device is the host). Default False.
    """

    group_batches = 0  # the default of CoresetAugmentation(group_batches=): nothing to decode

    def __init__(self, images: torch.Tensor, pin_memory: Optional[bool] = None, *, staged: bool = False):
        self.images, self.pin_memory, self.staged = images, pin_memory, staged

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def square_size(self) -> Optional[int]:
        h, w = self.images.shape[-2:]
        return h if h == w else None

    def train_batches(self, index: torch.Tensor, starts: List[int], device: torch.device, *,
                      seed: int = 0, window: int = 1) -> Iterator[Batch]:
        """Batch ``b``: rows ``index[starts[b]:starts[b + 1]]`` (int64 CPU), gathered on the host
        when the images are not on ``device`` (or :attr:`staged`); ``seed`` and ``window`` are
        for sources that read from disk."""
        staged = self.staged or self.images.device != device
        # one transfer per epoch for what every batch slices: no per-batch copies or checks
        index_dev = None if staged else to_device_async(index, self.images.device)
        for lo, hi in zip(starts[:-1], starts[1:]):
            if staged:
                yield self._gather(index[lo:hi], device), None
            else:
                yield self.images, index_dev[lo:hi]

    def eval_batches(self, rows: Optional[torch.Tensor], chunk: int, device: torch.device) -> Iterator[torch.Tensor]:
        """uint8 images ``rows`` (all when None), ``chunk`` at a time, on ``device``."""
        if rows is None:
            for part in self.images.split(chunk):
                yield to_device_async(part, device)
            return
        # gathered a chunk at a time: a pass over most rows must not copy them all at once
        for part in rows.to(self.images.device).split(chunk):
            yield to_device_async(self.images[part], device)

    def _gather(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Rows ``index`` gathered on the host into a (pinned) staging buffer, copied to
        ``device`` asynchronously."""
        shape = (index.numel(),) + tuple(self.images.shape[1:])
        pin = self.pin_memory is not False and device.type == "cuda"
        buf = torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
        torch.index_select(self.images, 0, index, out=buf)
        return buf.to(device, non_blocking=pin)


class DatasetSource:
    """Rows of a map-style dataset of ``(image, label)`` items, images of any size.

    Args:
        dataset: ``len(dataset)`` items; ``dataset[i]`` is ``(image, label)`` with a PIL image,
            a uint8 HWC ndarray or a uint8 CHW tensor (see :func:`coreaug_fast.loading.to_uint8_chw`).
        image_size: side of the square rows, >= 8.
        weak: ``"crop-flip"`` (rows are the centre view; the device pads, crops and flips) or
            ``"resized-crop"`` (each row its own RandomResizedCrop, in the worker).
        channels: 1 or 3.
        num_workers, pin_memory, prefetch_factor: as ``torch.utils.data.DataLoader``'s.
    """

    group_batches = 16  # the default of CoresetAugmentation(group_batches=): decode each image once

    def __init__(self, dataset, *, image_size: int, weak: str, channels: int = 3, num_workers: int = 0,
                 pin_memory: Optional[bool] = None, prefetch_factor: Optional[int] = None, name: str = "images"):
        check_dataset(dataset, name)
        self.dataset = dataset
        self.image_size = checks.check_int("image_size", image_size, low=MIN_IMAGE_SIZE)
        checks.check_choice("weak", weak, WEAK_MODES)
        self.weak = weak
        self.channels = channels
        self.num_workers = checks.check_int("num_workers", num_workers, low=0)
        self.pin_memory = pin_memory
        if prefetch_factor is not None:
            prefetch_factor = checks.check_int("prefetch_factor", prefetch_factor, low=1)
            if self.num_workers == 0:
                raise ValueError("prefetch_factor needs num_workers > 0 (as in DataLoader)")
        self.prefetch_factor = prefetch_factor
        self.resize = eval_resize(weak, self.image_size)
        # the first item, read here: a dataset of the wrong kind fails now, not in a worker
        try:
            read_item(dataset, 0, channels)
        except ItemError as e:
            raise ValueError(f"{name}: {e.describe()}") from None

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def square_size(self) -> int:
        return self.image_size

    def train_batches(self, index: torch.Tensor, starts: List[int], device: torch.device, *,
                      seed: int = 0, window: int = 1) -> Iterator[Batch]:
        """Batch ``b``: rows ``index[starts[b]:starts[b + 1]]``, each cut from its image in a
        worker (``seed`` seeds the rows' crop streams), uint8 on ``device``.

        The batches are read ``window`` at a time: a window's rows are split into one worker
        task per batch, by example (all the rows of an example in one task, so its image is
        read once); each batch of the window is then its tasks' rows on ``device`` with the
        index of its own rows among them (the window is held there until its last batch is
        yielded)."""
        geometry = "random-crop" if self.weak == "resized-crop" else "center"
        batches = len(starts) - 1
        windows = []  # (first batch, end batch, tasks: one per batch, the window's rows split by example)
        for b0 in range(0, batches, window):
            b1 = min(b0 + window, batches)
            positions = torch.arange(starts[b0], starts[b1])
            owner = index[starts[b0]:starts[b1]] % (b1 - b0)
            windows.append((b0, b1, [positions[owner == t] for t in range(b1 - b0)]))
        reader = BatchReader(self.dataset, index, [t for _, _, tasks in windows for t in tasks],
                             channels=self.channels, size=self.image_size, geometry=geometry, resize=self.resize,
                             seed=seed)
        loaded = self.load(reader, device)
        buffer = None  # one window's rows, reused by every window (no fresh pages to fault in)
        for b0, b1, tasks in windows:
            parts = [next(loaded)[0] for _ in tasks]
            if len(parts) == 1:  # one task, the window's rows in order
                yield parts[0], None
                continue
            # the window's rows in task order; each batch reads its rows by index (the fused
            # op gathers), so no row is copied back into window order
            lo, hi = starts[b0], starts[b1]
            if buffer is None or buffer.shape[0] < hi - lo:
                buffer = torch.empty((hi - lo,) + tuple(parts[0].shape[1:]), dtype=torch.uint8, device=device)
            images = torch.cat(parts, out=buffer[:hi - lo])
            where = torch.argsort(torch.cat(tasks)).to(images.device)
            for b in range(b0, b1):
                yield images, where[starts[b] - lo:starts[b + 1] - lo]

    def eval_batches(self, rows: Optional[torch.Tensor], chunk: int, device: torch.device) -> Iterator[torch.Tensor]:
        """The centre views of items ``rows`` (all when None), ``chunk`` at a time, uint8 on ``device``."""
        for images, _ in self.eval_items(self.dataset, rows, chunk, device):
            yield images

    def eval_items(self, dataset, rows: Optional[torch.Tensor], chunk: int, device: torch.device,
                   geometry: str = "center") -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 centre views, int64 labels from the items) of ``dataset`` (another one, e.g. a
        validation split, read the same way), ``chunk`` items at a time, on ``device``; with
        ``geometry="label"`` the items are read for their labels alone (empty images)."""
        index = torch.arange(len(dataset)) if rows is None else rows.cpu().long()
        reader = BatchReader(dataset, index, consecutive(batch_starts(index.numel(), chunk)), channels=self.channels,
                             size=self.image_size, geometry=geometry, resize=self.resize)
        return self.load(reader, device)

    def load(self, reader: BatchReader, device: torch.device) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Run ``reader``'s batches through a DataLoader; (images, labels) on ``device``. A batch
        whose item could not be read raises a ValueError naming the item and its file."""
        if len(reader) == 0:
            return
        pin = device.type == "cuda" and self.pin_memory is not False
        loader = torch.utils.data.DataLoader(
            reader, batch_size=None, shuffle=False, num_workers=self.num_workers, pin_memory=pin,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            # its own generator: the loader's base seed (unused: rows carry their own streams)
            # must not draw from, and so shift, the caller's global stream
            generator=torch.Generator().manual_seed(0))
        for item in loader:
            if isinstance(item, Failed):
                raise ValueError(item.error.describe())
            images, labels = item
            yield images.to(device, non_blocking=pin), labels.to(device, non_blocking=pin)


def check_dataset(dataset, name: str = "images") -> None:
    """A map-style dataset: ``len()`` and integer indexing, at least one item."""
    if isinstance(dataset, torch.utils.data.IterableDataset) or not (
            hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ValueError(f"{name} must be a uint8 tensor (N, C, H, W) or a map-style dataset of (image, label) "
                         f"items (with __len__ and __getitem__), got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{name} is an empty dataset")


def check_images_labels(images, labels) -> None:
    """uint8 (N, C, H, W) images, C = 1 or 3, and their integer (N,) labels >= 0."""
    checks.check_images("images", images)
    checks.check_tensor("labels", labels, dim=1, integer=True)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} rows for {images.shape[0]} images")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("labels must be >= 0")


def make_source(images, labels, *, image_size: Optional[int], weak: str, channels: Optional[int], num_workers: int,
                pin_memory: Optional[bool], prefetch_factor: Optional[int], augment_impl: str):
    """The source of :class:`~coreaug_fast.CoresetAugmentation`'s rows: a :class:`TensorSource`
    for a uint8 tensor (its ``labels`` checked against it), a :class:`DatasetSource` for a
    dataset. The settings that apply to the other kind only are refused, naming them."""
    if isinstance(images, torch.Tensor):
        check_images_labels(images, labels)
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
    checks.check_choice("channels", channels, (1, 3))
    return DatasetSource(images, image_size=image_size, weak=weak, channels=channels, num_workers=num_workers,
                         pin_memory=pin_memory, prefetch_factor=prefetch_factor)


__all__ = ["TensorSource", "DatasetSource", "batch_starts", "check_dataset", "check_images_labels", "check_label",
           "make_source"]
