"""Temporary plain-PyTorch stand-ins for the library calls the training loop makes, used
until the fused augmentation (issue 4) lands.

Same names and call signatures as those issues; slow and simple on purpose. Delete this
file at merge and switch the imports in ``_api.py``; nothing else imports it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF


def crop_flip(images, offsets, flips, *, padding=4, index=None):
    """uint8 (M, C, H, W): zero-pad, crop at (offsets[:, 0], offsets[:, 1]) = (top, left)
    in [0, 2 * padding], then flip horizontally where ``flips``."""
    src = images if index is None else images[index]
    m, _, h, w = src.shape
    padded = F.pad(src, (padding,) * 4)
    offsets = offsets.to(src.device).long()
    rows = (offsets[:, :1] + torch.arange(h, device=src.device))[:, None, :, None]
    cols = (offsets[:, 1:] + torch.arange(w, device=src.device))[:, None, None, :]
    out = padded[torch.arange(m, device=src.device)[:, None, None, None],
                 torch.arange(src.shape[1], device=src.device)[None, :, None, None], rows, cols]
    return torch.where(flips.to(src.device).bool()[:, None, None, None], out.flip(-1), out)


# RandAugment's ops and magnitude ranges (torchvision's table), applied to groups of images
# that drew the same op and sign, so each image gets its own op sequence.
def _affine(img, m, **kw):
    base = dict(angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, 0.0], center=[0, 0])
    return TF.affine(img, **{**base, **kw})


_RANDAUGMENT = [  # (name, max magnitude as a function of (H, W), signed, apply)
    ("Identity", lambda hw: 0.0, False, lambda x, m: x),
    ("ShearX", lambda hw: 0.3, True, lambda x, m: _affine(x, m, shear=[math.degrees(math.atan(m)), 0.0])),
    ("ShearY", lambda hw: 0.3, True, lambda x, m: _affine(x, m, shear=[0.0, math.degrees(math.atan(m))])),
    ("TranslateX", lambda hw: 150.0 / 331.0 * hw[1], True, lambda x, m: _affine(x, m, translate=[int(m), 0])),
    ("TranslateY", lambda hw: 150.0 / 331.0 * hw[0], True, lambda x, m: _affine(x, m, translate=[0, int(m)])),
    ("Rotate", lambda hw: 30.0, True, lambda x, m: TF.rotate(x, m)),
    ("Brightness", lambda hw: 0.9, True, lambda x, m: TF.adjust_brightness(x, 1.0 + m)),
    ("Color", lambda hw: 0.9, True, lambda x, m: TF.adjust_saturation(x, 1.0 + m)),
    ("Contrast", lambda hw: 0.9, True, lambda x, m: TF.adjust_contrast(x, 1.0 + m)),
    ("Sharpness", lambda hw: 0.9, True, lambda x, m: TF.adjust_sharpness(x, 1.0 + m)),
    ("Posterize", None, False, lambda x, m: TF.posterize(x, int(m))),
    ("Solarize", lambda hw: 255.0, False, lambda x, m: TF.solarize(x, m)),
    ("AutoContrast", lambda hw: 0.0, False, lambda x, m: TF.autocontrast(x)),
    ("Equalize", lambda hw: 0.0, False, lambda x, m: TF.equalize(x)),
]


def _magnitude(op, bin_, bins, hw):
    name, top, _, _ = _RANDAUGMENT[op]
    if name == "Posterize":
        return float(8 - int(round(bin_ / ((bins - 1) / 4))))
    if name == "Solarize":
        return 255.0 * (1.0 - bin_ / (bins - 1))
    return top(hw) * bin_ / (bins - 1)


class Augmenter:
    """Crop/flip, then RandAugment (``num_ops`` ops at bin ``magnitude``, sign flipped with
    probability 0.5), then normalisation ((x / 255 - mean) / std) to ``out_dtype``.

    ``augmenter(images, index=None, *, generator=None)`` returns (M * copies, C, H, W);
    row ``k * M + i`` is copy k of ``images[index[i]]`` (copy-major).
    """

    def __init__(self, num_ops=2, magnitude=9, num_magnitude_bins=31, copies=4, padding=4,
                 flip=True, mean=None, std=None, out_dtype=torch.float32):
        self.num_ops, self.magnitude, self.bins = num_ops, magnitude, num_magnitude_bins
        self.copies, self.padding, self.flip = copies, padding, flip
        self.mean, self.std, self.out_dtype = mean, std, out_dtype

    def __call__(self, images, index=None, *, generator=None):
        src = images if index is None else images[index.to(images.device)]
        src = src.repeat(self.copies, 1, 1, 1)
        m, hw = src.shape[0], tuple(src.shape[-2:])
        ops = torch.randint(len(_RANDAUGMENT), (m, self.num_ops), generator=generator)
        negative = torch.rand(m, self.num_ops, generator=generator) < 0.5
        offsets = torch.randint(2 * self.padding + 1, (m, 2), generator=generator)
        flips = (torch.rand(m, generator=generator) < 0.5) & self.flip
        out = crop_flip(src, offsets, flips, padding=self.padding)  # RandomCrop -> Flip -> RandAugment
        for pos in range(self.num_ops):
            for op in torch.unique(ops[:, pos]).tolist():
                _, _, signed, apply = _RANDAUGMENT[op]
                mag = _magnitude(op, self.magnitude, self.bins, hw)
                for neg in ((False, True) if signed else (False,)):
                    rows = ((ops[:, pos] == op) & (negative[:, pos] == neg if signed else True)).nonzero().squeeze(1)
                    if rows.numel():
                        rows = rows.to(out.device)
                        out[rows] = apply(out[rows], -mag if neg else mag)
        x = out.to(self.out_dtype) / 255.0
        if self.mean is not None:
            x = (x - torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)) \
                / torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x
