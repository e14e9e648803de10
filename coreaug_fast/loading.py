"""Reading a map-style image dataset in DataLoader workers: one item -> a uint8 (C, H, W) tensor
with the model's channels, and the per-row geometry that turns images of any size into fixed-size
rows (``image_size`` x ``image_size``), a whole batch per worker task.

What runs where (the split of :class:`~coreaug_fast.CoresetAugmentation` for datasets):

* **workers** (this module): decode (``dataset[i]``), channel conversion, and the per-row
  geometry of variable-size images: ``RandomResizedCrop`` for ``weak="resized-crop"``; for
  ``weak="crop-flip"`` and for evaluation, resize of the shorter side then a centre crop. Each
  source image is read once per batch, however many of the batch's rows it feeds (an original
  and its strong copies are cut from the same decoded image).
* **the device**: flip, the strong policy and the normalisation, fused, on whole batches
  (:mod:`coreaug_fast.augment`).

Geometry is torchvision 0.29's ``transforms.v2.functional`` on uint8 tensors (``resized_crop``,
``resize``, ``center_crop``; bilinear, antialiased), called as is, so a row equals torchvision's
output for the same crop. Crop parameters follow ``RandomResizedCrop.make_params`` (10 tries, then
the central fallback) but are drawn from the row's own stream, seeded by (epoch seed, row
position): batches do not depend on the number of workers.

Channel conversion (what torchvision's ``ImageFolder`` loader does, ``Image.convert("RGB")``):
PIL images are converted to ``"RGB"`` (3 channels) or ``"L"`` (1 channel); a grey (H, W) or
(1, H, W) array or tensor is repeated to 3 channels; RGBA loses its alpha (no compositing,
as ``convert("RGB")``); 3 channels to 1 use torchvision's ``rgb_to_grayscale``.
"""
from __future__ import annotations

import math
import random
import warnings
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from .checks import first_line
from .torchvision_augment import sample_seed

#: RandomResizedCrop's defaults (the ImageNet convention).
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
#: Evaluation resizes the shorter side to image_size / EVAL_CROP, then centre-crops image_size
#: (ImageNet's 256 -> 224), for ``weak="resized-crop"``; ``crop-flip`` resizes to image_size.
EVAL_CROP = 0.875
MIN_IMAGE_SIZE = 8


def _tv_functional():
    try:
        from torchvision.transforms.v2 import functional
    except ImportError:  # pragma: no cover - explained to the user
        raise ImportError("reading an image dataset needs torchvision: pip install torchvision") from None
    return functional


class ItemError(Exception):
    """A dataset item that could not be read or is not an (image, label) pair."""

    def __init__(self, index: int, message: str, path: Optional[str] = None):
        super().__init__(index, message, path)
        self.index, self.message, self.path = index, message, path

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"dataset item {self.index}{where}: {self.message}"


def item_path(dataset, index: int) -> Optional[str]:
    """The file behind item ``index`` when the dataset says (torchvision folders' ``samples``)."""
    samples = getattr(dataset, "samples", None) or getattr(dataset, "imgs", None)
    try:
        path = samples[index][0]
    except Exception:
        return None
    return path if isinstance(path, str) else None


def to_uint8_chw(image, channels: int) -> torch.Tensor:
    """One image as uint8 (channels, H, W), converted as the module docstring says.

    Args:
        image: a PIL image, a uint8 (H, W) / (H, W, C) ndarray, or a uint8 (C, H, W) / (H, W)
            tensor, C in {1, 3, 4}.
        channels: 1 or 3.

    Raises:
        ValueError: any other type, dtype or shape (the message says what was found).
    """
    if _is_pil(image):
        mode = "RGB" if channels == 3 else "L"
        if image.mode != mode:
            image = image.convert(mode)
        # torchvision's pil_to_tensor, without its second copy: np.asarray takes the pixels out
        # of PIL once (read-only memory torch only reads), the permute is a view (HWC storage)
        pixels = np.asarray(image)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not writable": nothing writes to it
            t = torch.from_numpy(pixels)
        return t.permute(2, 0, 1) if t.dim() == 3 else t[None]
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"the image is a {image.dtype} ndarray; give uint8 images (0..255)")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"the image is an ndarray of shape {image.shape}; expected (H, W) or (H, W, C)")
        # a read-only array (np.asarray of a PIL image) is copied: torch tensors are writable
        image = np.ascontiguousarray(image) if image.flags.writeable else np.array(image, order="C")
        t = torch.from_numpy(image).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise ValueError(f"the image is a {image.dtype} tensor; give uint8 images (0..255), without a "
                             "ToTensor/Normalize transform: the normalisation is done on the device")
        t = image[None] if image.dim() == 2 else image
        if t.dim() != 3:
            raise ValueError(f"the image is a tensor of shape {tuple(image.shape)}; expected (C, H, W) or (H, W)")
        t = t.cpu()
    else:
        raise ValueError(f"the image is a {type(image).__name__}; expected a PIL image, an ndarray or a tensor")
    c = t.shape[0]
    if c not in (1, 3, 4) or min(t.shape[1:]) < 1:
        raise ValueError(f"the image has shape (C, H, W) = {tuple(t.shape)}; expected 1, 3 or 4 channels")
    if c == 4:
        t = t[:3]
    if channels == 3 and t.shape[0] == 1:
        return t.expand(3, -1, -1).contiguous()
    if channels == 1 and t.shape[0] == 3:
        return _tv_functional().rgb_to_grayscale(t.contiguous(), num_output_channels=1)
    return t.contiguous()


def _is_pil(image) -> bool:
    return type(image).__module__.startswith("PIL.")


def check_label(index: int, label) -> int:
    """A Python int >= 0 from an item's label (int, NumPy integer, 0-d integer tensor)."""
    import operator

    if isinstance(label, bool) or (isinstance(label, torch.Tensor) and (label.dim() != 0 or label.is_floating_point())):
        raise ItemError(index, f"the label {label!r} is not an integer class id")
    try:
        value = operator.index(label)
    except TypeError:
        raise ItemError(index, f"the label is a {type(label).__name__} ({label!r}), not an integer class id") from None
    if value < 0:
        raise ItemError(index, f"the label {value} is negative; class ids are 0..C-1")
    return value


def read_item(dataset, index: int, channels: int) -> Tuple[torch.Tensor, int]:
    """Item ``index`` of ``dataset`` as (uint8 (channels, H, W), label). Every failure, the
    dataset's own included (an unreadable or truncated file), becomes an :class:`ItemError`
    naming the item and its file."""
    try:
        item = dataset[index]
    except Exception as e:  # the dataset's own error: say which item and file, keep its words
        raise ItemError(index, f"cannot be read ({type(e).__name__}: {first_line(e)})",
                        item_path(dataset, index)) from None
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        kind = f"a {type(item).__name__}" + (f" of {len(item)} items" if isinstance(item, (tuple, list)) else "")
        raise ItemError(index, f"is {kind}; expected an (image, label) pair", item_path(dataset, index))
    image, label = item
    try:
        return to_uint8_chw(image, channels), check_label(index, label)
    except ValueError as e:
        raise ItemError(index, str(e), item_path(dataset, index)) from None


# ---- geometry ------------------------------------------------------------------------------

def resized_crop_params(rng: random.Random, height: int, width: int,
                        scale: Sequence[float] = RRC_SCALE,
                        ratio: Sequence[float] = RRC_RATIO) -> Tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random crop, by torchvision's
    ``RandomResizedCrop.make_params`` algorithm (10 tries of area and log-aspect, then the
    central crop clamped to ``ratio``), with draws from ``rng``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randrange(height - h + 1), rng.randrange(width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def row_rng(seed: int, position: int) -> random.Random:
    """The random stream of row ``position`` of an epoch whose worker seed is ``seed``."""
    return random.Random(sample_seed(seed, position))


def random_resized_crop(image: torch.Tensor, size: int, rng: random.Random) -> torch.Tensor:
    """uint8 (C, size, size): torchvision's ``resized_crop`` of ``image`` (C, H, W) at a crop
    drawn by :func:`resized_crop_params`."""
    top, left, h, w = resized_crop_params(rng, image.shape[-2], image.shape[-1])
    return _tv_functional().resized_crop(image, top, left, h, w, [size, size], antialias=True)


def eval_resize(weak: str, size: int) -> int:
    """The shorter side images are resized to before the centre crop of ``size``."""
    return int(round(size / EVAL_CROP)) if weak == "resized-crop" else size


def center_view(image: torch.Tensor, size: int, resize: int) -> torch.Tensor:
    """uint8 (C, size, size): the shorter side resized to ``resize`` (torchvision's ``resize``,
    a no-op when it already is), then torchvision's ``center_crop`` of ``size``."""
    F = _tv_functional()
    return F.center_crop(F.resize(image, [resize], antialias=True), [size, size])


# ---- whole batches, in a worker ------------------------------------------------------------

def _batch_buffer(shape) -> torch.Tensor:
    """A uint8 tensor for a batch: in a DataLoader worker, in shared memory from the start (a
    tensor a worker returns is moved there otherwise: one more copy of every batch)."""
    if torch.utils.data.get_worker_info() is None or not hasattr(torch.UntypedStorage, "_new_shared"):
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class Failed(NamedTuple):
    """What a worker returns instead of a batch when an item could not be read (an exception
    raised in a worker would reach the user wrapped in DataLoader's traceback text)."""

    error: ItemError


class BatchReader(torch.utils.data.Dataset):
    """Item ``t`` is one worker task: the rows at positions ``parts[t]`` of ``index``, read and
    shaped in the worker that gets it.

    Each distinct dataset item of a task is read once; each of its rows is then cut from it:
    ``"random-crop"`` rows by :func:`random_resized_crop` under the row's own stream
    (:func:`row_rng` of ``seed`` and the row's position), ``"center"`` rows by
    :func:`center_view` (one per item, shared by its rows); ``"label"`` cuts nothing (the
    items are read and checked for their labels alone). A row's pixels depend on its
    position and item alone, not on which task reads it.

    Returns (uint8 (R, channels, size, size), or (0,) for ``"label"``; int64 (R,) labels as
    the items give them), rows in the order of ``parts[t]``, or :class:`Failed`.
    """

    def __init__(self, dataset, index: torch.Tensor, parts: List[torch.Tensor], *, channels: int, size: int,
                 geometry: str, resize: int = 0, seed: int = 0):
        self.dataset, self.index, self.parts = dataset, index, parts
        self.channels, self.size, self.geometry = channels, size, geometry
        self.resize, self.seed = resize, seed

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, t: int):
        positions = self.parts[t].tolist()
        rows_of = {}  # item -> its rows in this task, in order (one read per item)
        for r, i in enumerate(self.index[self.parts[t]].tolist()):
            rows_of.setdefault(i, []).append(r)
        pixels = self.geometry != "label"
        out = _batch_buffer((len(positions), self.channels, self.size, self.size)) if pixels else \
            torch.empty(0, dtype=torch.uint8)
        labels = torch.empty(len(positions), dtype=torch.long)
        try:
            for i, rows in rows_of.items():
                image, label = read_item(self.dataset, i, self.channels)
                labels[rows] = label
                if not pixels:
                    continue
                if self.geometry == "center":
                    out[rows] = center_view(image, self.size, self.resize)
                    continue
                for r in rows:
                    out[r] = random_resized_crop(image, self.size, row_rng(self.seed, positions[r]))
        except ItemError as e:
            return Failed(e)
        return out, labels


def consecutive(starts: List[int]) -> List[torch.Tensor]:
    """Tasks of consecutive rows: ``arange(starts[b], starts[b + 1])`` for each b."""
    return [torch.arange(lo, hi) for lo, hi in zip(starts[:-1], starts[1:])]
