"""Plain twin of coreaug_fast.augment: each row's ops applied one by one with
torchvision.transforms.v2.functional on uint8 tensors, exactly as torchvision's policies
(RandAugment, AutoAugment, TrivialAugmentWide: ``_AutoAugmentBase._apply_image_or_video_transform``)
map an op and a magnitude to a call (except Solarize, whose magnitude here is already the
threshold in pixels). Whatever policy drew a row's ops, its replay is this. Slow by design:
one image and one op at a time."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from ..policies import OPS


def _tv():
    # torchvision is a test extra, not a dependency: imported on first use only.
    from torchvision.transforms.v2 import InterpolationMode, functional

    return functional, InterpolationMode.NEAREST


def apply_op_reference(image: torch.Tensor, name: str, magnitude: float, fill: Sequence[float]) -> torch.Tensor:
    """One op of :data:`coreaug_fast.OPS` on one uint8 (C, H, W) image."""
    F, _NEAREST = _tv()
    m = float(magnitude)
    fill = [float(f) for f in fill]
    if name == "Identity":
        return image
    if name in ("ShearX", "ShearY"):
        angle = math.degrees(math.atan(m))
        return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0,
                        shear=[angle, 0.0] if name == "ShearX" else [0.0, angle],
                        interpolation=_NEAREST, fill=fill, center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        return F.affine(image, angle=0.0, translate=[int(m), 0] if name == "TranslateX" else [0, int(m)],
                        scale=1.0, interpolation=_NEAREST, shear=[0.0, 0.0], fill=fill)
    if name == "Rotate":
        return F.rotate(image, angle=m, interpolation=_NEAREST, fill=fill)
    if name == "Brightness":
        return F.adjust_brightness(image, brightness_factor=1.0 + m)
    if name == "Color":
        return F.adjust_saturation(image, saturation_factor=1.0 + m)
    if name == "Contrast":
        return F.adjust_contrast(image, contrast_factor=1.0 + m)
    if name == "Sharpness":
        return F.adjust_sharpness(image, sharpness_factor=1.0 + m)
    if name == "Posterize":
        return F.posterize(image, bits=int(m))
    if name == "Solarize":
        return F.solarize(image, threshold=m)
    if name == "AutoContrast":
        return F.autocontrast(image)
    if name == "Equalize":
        return F.equalize(image)
    if name == "Invert":
        return F.invert(image)
    raise ValueError(f"unknown op {name!r}")


def crop_flip_image_reference(image: torch.Tensor, top: int, left: int, flip: bool, padding: int) -> torch.Tensor:
    """RandomCrop(size=(H, W), padding) with this offset, then an optional horizontal flip."""
    F, _ = _tv()
    h, w = image.shape[-2:]
    out = F.crop(F.pad(image, [padding], fill=0), top, left, h, w)
    return F.horizontal_flip(out) if flip else out


def apply_augment_reference(images: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor, *,
                            index: Optional[torch.Tensor] = None, fill: Union[int, Sequence[int]] = 0,
                            offsets: Optional[torch.Tensor] = None, flips: Optional[torch.Tensor] = None,
                            padding: int = 4) -> torch.Tensor:
    """Row m: image ``index[m]``, cropped/flipped first if ``offsets``/``flips`` are given,
    then ``ops[m, :]`` applied left to right. uint8 (M, C, H, W) on the device of images."""
    c = images.shape[1]
    fill_values = list(fill) if isinstance(fill, (list, tuple)) else [fill] * c
    if len(fill_values) == 1:
        fill_values = fill_values * c
    rows = []
    for m in range(ops.shape[0]):
        img = images[int(index[m]) if index is not None else m]
        if offsets is not None:
            img = crop_flip_image_reference(img, int(offsets[m, 0]), int(offsets[m, 1]), bool(flips[m]), padding)
        for op, mag in zip(ops[m].tolist(), magnitudes[m].float().tolist()):
            img = apply_op_reference(img, OPS[op], mag, fill_values)
        rows.append(img)
    if not rows:
        return images.new_empty((0,) + tuple(images.shape[1:]))
    return torch.stack(rows)


def crop_flip_reference(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, *,
                        padding: int = 4, index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Twin of :func:`coreaug_fast.crop_flip`."""
    ops = torch.empty(offsets.shape[0], 0, dtype=torch.int32)
    return apply_augment_reference(images, ops, ops.float(), index=index, offsets=offsets, flips=flips,
                                   padding=padding)


def normalize_reference(images: torch.Tensor, mean=None, std=None, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """ToDtype(float32, scale=True), Normalize(mean, std) if given, then a cast to out_dtype."""
    if out_dtype == torch.uint8:
        return images
    F, _ = _tv()
    x = F.to_dtype(images, torch.float32, scale=True)
    if mean is not None or std is not None:
        c = images.shape[-3]
        mean = [0.0] * c if mean is None else (list(mean) * c if len(mean) == 1 else list(mean))
        std = [1.0] * c if std is None else (list(std) * c if len(std) == 1 else list(std))
        x = F.normalize(x, mean=mean, std=std)
    return x.to(out_dtype)


def augmenter_reference(augmenter, images: torch.Tensor, params) -> torch.Tensor:
    """What :meth:`coreaug_fast.Augmenter.apply` computes for ``params``, op by op."""
    out = apply_augment_reference(images, params.ops.cpu(), params.magnitudes.cpu(), index=params.source.cpu(),
                                  fill=augmenter.fill, offsets=None if params.offsets is None else params.offsets.cpu(),
                                  flips=None if params.flips is None else params.flips.cpu(),
                                  padding=augmenter.padding)
    return normalize_reference(out, augmenter.mean, augmenter.std, augmenter.out_dtype)
