"""Turns rows of the uint8 dataset into a normalised float batch: weak augmentation
(crop + flip) for originals, the strong policy for copies, both gathering by index so the
selected images are never copied out first.

The two calls into the augmentation op (issue 4) are here and only here. They assume:
``crop_flip(images, offsets, flips, *, padding, index)`` with ``offsets`` int (M, 2) =
(top, left) of the crop in the padded image, each in [0, 2 * padding], ``flips`` bool (M,),
returning uint8; and ``Augmenter(...)(images, index=..., generator=...)`` returning the
normalised float batch, ``mean``/``std`` in [0, 1] units as torchvision's ``Normalize``.
"""
from __future__ import annotations

import torch

from . import _api
from .data import Dataset


class BatchMaker:
    """Builds training and evaluation inputs for one dataset on one device.

    All augmentation parameters are drawn from the ``generator`` passed to each call (a CPU
    ``torch.Generator``), so a run is repeatable and resumable.
    """

    def __init__(self, ds: Dataset, *, num_ops: int, magnitude: int):
        self.ds = ds
        dev = ds.train_x.device
        self.mean = torch.tensor(ds.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        self.std = torch.tensor(ds.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        # copies=1 with a repeated index: each output row is one independent draw, so the
        # rows line up with `index` whatever order the op lays copies out in.
        self.augmenter = _api.Augmenter(num_ops=num_ops, magnitude=magnitude, copies=1,
                                        padding=ds.padding, flip=ds.flip, mean=ds.mean, std=ds.std)

    def normalize(self, x_u8: torch.Tensor) -> torch.Tensor:
        """uint8 (M, C, H, W) -> float32 ``(x / 255 - mean) / std``."""
        return (x_u8.float() / 255.0 - self.mean) / self.std

    def weak(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop (zero padding ``ds.padding``) and, where the dataset allows, a
        horizontal flip of rows ``index`` of the training images; float32 (M, C, H, W)."""
        m, p = index.numel(), self.ds.padding
        offsets = torch.randint(2 * p + 1, (m, 2), generator=generator, dtype=torch.int32)
        flips = (torch.rand(m, generator=generator) < 0.5) & self.ds.flip
        dev = self.ds.train_x.device
        out = _api.crop_flip(self.ds.train_x, offsets.to(dev), flips.to(dev), padding=p, index=index)
        return self.normalize(out)

    def strong(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The strong policy (``num_ops`` RandAugment ops, then crop/flip) applied to rows
        ``index``, one independent draw per row; float32 (M, C, H, W)."""
        return self.augmenter(self.ds.train_x, index=index, generator=generator)

    def clean(self, images_u8: torch.Tensor) -> torch.Tensor:
        """No augmentation: the input of the selection pass and of evaluation."""
        return self.normalize(images_u8)
